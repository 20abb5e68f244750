#!/usr/bin/env bash
# Malformed-packet soak: 5 minutes of random and mutated datagrams against the running offpath; it must
# stay up, keep its memory flat, and its counters must explain every line (README.md here).
# Usage: packaging/bench/soak.sh [soak.py options, e.g. --duration 300 --rate 200000]
# Environment: SKIP_BUILD=1 reuses built binaries.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --profile dist -p offpath --bin offpath && cargo build --profile dist -p offpath-tests --bin offpath-loadgen)
fi
exec python3 "$here/soak.py" --bin-dir "$target/dist" "$@"
