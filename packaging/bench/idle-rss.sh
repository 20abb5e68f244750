#!/usr/bin/env bash
# Idle RSS of the release offpath on its defaults, without and with an API key (pointed at the fake
# intake), broken down by mapping kind from /proc/<pid>/smaps (README.md here).
# Usage: packaging/bench/idle-rss.sh [idle_rss.py options, e.g. --seconds 35 --verbose]
# Environment: SKIP_BUILD=1 reuses built binaries.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --profile dist -p offpath --bin offpath \
        && cargo build --profile dist -p offpath-tests --bin offpath-fake-intake)
fi
exec python3 "$here/idle_rss.py" --bin-dir "$target/dist" "$@"
