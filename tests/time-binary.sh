#!/usr/bin/env bash
# Cargo runner for the test binaries (tests/run.sh sets CARGO_TARGET_<host>_RUNNER to it): runs the
# binary, prints its wall time to stderr, appends "seconds name" to $OFFPATH_TEST_TIMINGS when set,
# and exits with the binary's exit code.
start=$(date +%s%N)
"$@"
status=$?
end=$(date +%s%N)
name="$(basename "$1")"   # sidecar_e2e-0123abcd (the hash tells offpath's lib and bin unit tests apart)
secs="$(awk -v ns="$((end - start))" 'BEGIN { printf "%.1f", ns / 1e9 }')"
echo "tests/run.sh: $name took $secs s (exit $status)" >&2
[ -n "${OFFPATH_TEST_TIMINGS:-}" ] && echo "$secs $name" >>"$OFFPATH_TEST_TIMINGS"
exit "$status"
