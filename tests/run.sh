#!/usr/bin/env bash
# The whole test suite, with its set-up: installs the test peers, builds the binaries, runs every test.
# Usage: bash tests/run.sh   (from the repository root; extra arguments go to `cargo test`)
set -euo pipefail
cd "$(dirname "$0")/.."

# CloudWatch Logs emulator for the fallback tests (moto server, from PyPI).
if ! python3 -c 'import moto.server, flask, werkzeug' >/dev/null 2>&1; then
  echo "tests/run.sh: installing moto[server] (CloudWatch Logs emulator)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi

# systemd-analyze verifies the systemd unit (packaging/systemd); Debian package `systemd`.
if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "tests/run.sh: installing systemd (for systemd-analyze verify)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null) \
    || echo "tests/run.sh: could not install systemd; the unit test will say so"
fi

# Datadog's Lambda Python library and AWS's Python runtime client, the real peers of the Lambda tests
# (tests/tests/lambda_python.rs), and Datadog's DogStatsD client `datadog` (which datadog-lambda needs;
# tests/tests/dogstatsd_mapping.rs), in a virtual environment of their own so no other package changes
# (about 40 s on a fresh machine: prebuilt wheels). Without a wheel for this Python, awslambdaric
# compiles its C extension: the build tools are installed then.
lambda_py="${CARGO_TARGET_DIR:-target}/lambda-python"
lambda_peers="awslambdaric==4.2.2 datadog-lambda==8.130.0 datadog==0.56.0"
apt_install() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! "$lambda_py/bin/python3" -c 'import awslambdaric, datadog_lambda, datadog' >/dev/null 2>&1; then
  echo "tests/run.sh: installing $lambda_peers into $lambda_py"
  python3 -m venv "$lambda_py" || { apt_install python3-venv && python3 -m venv "$lambda_py"; }
  # shellcheck disable=SC2086
  if ! "$lambda_py/bin/pip" install --quiet --disable-pip-version-check $lambda_peers; then
    echo "tests/run.sh: no prebuilt awslambdaric here; installing its build tools and building it"
    apt_install g++ make cmake unzip autoconf automake libtool libcurl4-openssl-dev
    # shellcheck disable=SC2086
    "$lambda_py/bin/pip" install --quiet --disable-pip-version-check $lambda_peers
  fi
fi
export OFFPATH_LAMBDA_PYTHON
OFFPATH_LAMBDA_PYTHON="$(cd "$lambda_py" && pwd)/bin/python3"
# The Lambda sandbox tests run in private mount and network namespaces: unshare and mount (util-linux), ip.
command -v unshare >/dev/null 2>&1 || apt_install util-linux || true
command -v ip >/dev/null 2>&1 || apt_install iproute2 || true

# No test may reach a real EC2 instance metadata service (169.254.169.254): the hostname tests point
# AWS_EC2_METADATA_SERVICE_ENDPOINT at a fake on 127.0.0.1 instead.
export AWS_EC2_METADATA_DISABLED=true

# The end-to-end tests run the real binaries.
cargo build --workspace --bins --quiet

# Every test binary runs under tests/time-binary.sh (a cargo runner), which prints its wall time; the
# table at the end, slowest first, shows where the suite's time goes. The exit code is cargo's.
timings="$(mktemp)"
trap 'rm -f "$timings"' EXIT
export OFFPATH_TEST_TIMINGS="$timings"
host_triple="$(rustc -vV | sed -n 's/^host: //p')"
runner_var="CARGO_TARGET_$(echo "$host_triple" | tr 'a-z-' 'A-Z_')_RUNNER"
export "$runner_var=bash $PWD/tests/time-binary.sh"
started=$SECONDS
status=0
cargo test --workspace --quiet "$@" || status=$?
# The library as the Lambda layer builds it (no `cloudwatch`, no `http2`): its cfg'd tests.
[ "$status" = 0 ] && { cargo test -p offpath --no-default-features --lib --quiet || status=$?; }
echo
echo "tests/run.sh: wall time per test binary, slowest first (total $((SECONDS - started)) s, builds included):"
sort -rn "$timings" | awk '{ printf "  %8.1f s  %s\n", $1, $2 }'
exit "$status"
