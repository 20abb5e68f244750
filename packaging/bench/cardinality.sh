#!/usr/bin/env bash
# Cardinality explosion: 1,000,000 distinct contexts offered to offpath in a minute; RSS sampled and checked
# against the bound derived from DD_AGGREGATE_CONTEXT_LIMIT (README.md here).
# Usage: packaging/bench/cardinality.sh [cardinality.py options, e.g. --limit 100000 --duration 60]
# Environment: SKIP_BUILD=1 reuses built binaries.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --profile dist -p offpath --bin offpath \
        && cargo build --profile dist -p offpath-tests --bin offpath-loadgen --bin offpath-fake-intake)
fi
exec python3 "$here/cardinality.py" --bin-dir "$target/dist" "$@"
