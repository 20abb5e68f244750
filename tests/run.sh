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

# No test may reach a real EC2 instance metadata service (169.254.169.254): the hostname tests point
# AWS_EC2_METADATA_SERVICE_ENDPOINT at a fake on 127.0.0.1 instead.
export AWS_EC2_METADATA_DISABLED=true

# The end-to-end tests run the real binaries.
cargo build --workspace --bins --quiet
cargo test --workspace --quiet "$@"
# The library as the Lambda layer builds it (no `cloudwatch`, no `http2`): its cfg'd tests.
cargo test -p offpath --no-default-features --lib --quiet
