#!/usr/bin/env bash
# The Lambda extension's CPU time per invocation (#16 item 5; #13: the CPU spent on enhanced metrics): the
# release offpath-lambda in a private PID namespace (so /proc shows a sandbox's few processes) against the
# fake Runtime API and a healthy local fake intake, 100 DogStatsD lines per invocation, 100 invocations,
# enhanced metrics off / on without the /proc metrics / on. Prints the median, p90 and mean per invocation
# (threads' run time from /proc/<pid>/task/*/schedstat) and the mean from /proc/<pid>/stat (user + system).
# Usage: packaging/bench/lambda-cpu.sh [--invocations N] [--metrics N]
# Environment: SKIP_BUILD=1 reuses built binaries; BENCH_PROFILE=release builds the harness optimised too.
# Needs root (unshare --pid --mount-proc).
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
exec "$target/$profile_dir/offpath-lambda-bench" cpu --extension "$target/dist/offpath-lambda" "$@"
