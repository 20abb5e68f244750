#!/usr/bin/env bash
# Run offpath's cargo-fuzz targets one after the other, each for a given time.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET (default 600)] [TARGET ...]   (default: every target)
# Environment: NICE (default 15) niceness of the fuzzers; FUZZ_ARGS extra libFuzzer flags, e.g.
#   FUZZ_ARGS="-fork=1 -ignore_crashes=1" to keep going past a known crash (still one process at a time).
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers): `rustup toolchain install nightly`.
# Installs cargo-fuzz from crates.io when it is missing. One process per target (no -jobs/-workers),
# so the fuzzer takes one core. Crashes land in fuzz/artifacts/<target>/; the script exits 1 if any.
# Turn each into a regression test in tests/tests/fuzz_regressions.rs (the bytes as a literal).
set -euo pipefail

cd "$(dirname "$0")"
secs="${1:-600}"
[[ $# -gt 0 ]] && shift

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: a nightly toolchain is required: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    flags=(-max_total_time="$secs" -print_final_stats=1)
    [[ -f "dict/$t.dict" ]] && flags+=(-dict="dict/$t.dict")
    dirs=("corpus/$t")
    [[ -d "seeds/$t" ]] && dirs+=("seeds/$t")
    echo "fuzz/run.sh: $t for ${secs}s" >&2
    # shellcheck disable=SC2086
    if ! nice -n "${NICE:-15}" cargo +nightly fuzz run "$t" "${dirs[@]}" -- "${flags[@]}" ${FUZZ_ARGS:-}; then
        status=1
    fi
    if compgen -G "artifacts/$t/*" >/dev/null; then
        echo "fuzz/run.sh: $t left artifacts:" >&2
        ls -l "artifacts/$t" >&2
        status=1
    fi
done
exit "$status"
