#!/usr/bin/env bash
# The seed's table (#13): a Kinesis-batch function (200 records, 70-120 ms of work, 200-1000 lambda_metric
# calls) in the real Python runtime client (awslambdaric) with Datadog's library (datadog-lambda), against
# the fake Runtime API and a fake intake answering after 150 ms, 100 invocations per configuration:
# the work alone, the library without an extension (synchronous API flush), the library with offpath's
# compatible layer, the same with the intake down, and the library with nothing reading its datagrams. Prints median and p99 of the function's duration and
# of the time until the next event/next (packaging/bench/README.md).
# Usage: packaging/bench/lambda-seed.sh [--invocations N] [--delay-ms MS] [--configs baseline,api,offpath,offpath-down,library]
# Environment: SKIP_BUILD=1 reuses built binaries; BENCH_PROFILE=release builds the harness optimised too
# (default: dev; the extension is always the dist build, what ships); OFFPATH_LAMBDA_PYTHON: a python that has
# awslambdaric and datadog-lambda (default: the virtual environment tests/run.sh makes, made here if missing).
# Needs root (private mount and network namespaces: unshare, mount, ip).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
profile="${BENCH_PROFILE:-dev}"
profile_dir="$([ "$profile" = dev ] && echo debug || echo "$profile")"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --profile dist -p offpath-lambda --bin offpath-lambda \
        && cargo build --profile "$profile" -p offpath-tests --bin offpath-lambda-bench)
fi
if [[ -z "${OFFPATH_LAMBDA_PYTHON:-}" ]]; then
    venv="$target/lambda-python"
    if ! "$venv/bin/python3" -c 'import awslambdaric, datadog_lambda' >/dev/null 2>&1; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check awslambdaric==4.2.2 datadog-lambda==8.130.0
    fi
    export OFFPATH_LAMBDA_PYTHON="$venv/bin/python3"
fi
exec "$target/$profile_dir/offpath-lambda-bench" seed --extension "$target/dist/offpath-lambda" "$@"
