#!/usr/bin/env bash
# Loss curve: offpath and netdata's statsd side by side under the same offpath-loadgen workload.
# Usage: packaging/bench/loss-curve.sh [loss_curve.py options, e.g. --rates 250000,1000000,0 --duration 5]
# Environment: SKIP_BUILD=1 reuses built binaries; SKIP_NETDATA=1 runs offpath only;
#              TUNE_SYSCTL=1 raises net.core.rmem_max to 32 MiB first (root), as the README recommends.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/dist"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building offpath (dist profile), offpath-loadgen and offpath-fake-intake" >&2
    bins=(--bin offpath-loadgen)
    [[ -f "$root/tests/src/bin/offpath-fake-intake.rs" ]] && bins+=(--bin offpath-fake-intake)
    (cd "$root" && cargo build --profile dist -p offpath --bin offpath && cargo build --profile dist -p offpath-tests "${bins[@]}")
fi

systems=offpath
if [[ "${SKIP_NETDATA:-0}" != 1 ]]; then
    if ! command -v netdata >/dev/null && [[ ! -x /usr/sbin/netdata ]]; then
        echo "installing Debian's netdata (netdata-core) for the side-by-side run" >&2
        sudo=""
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        $sudo apt-get update -qq
        # The package's own service is not started (policy-rc.d in containers; we stop it otherwise):
        # the bench starts its own netdata with only the statsd plugin on free ports.
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends netdata-core >&2
        if command -v systemctl >/dev/null && systemctl is-active --quiet netdata 2>/dev/null; then
            $sudo systemctl stop netdata || true
        fi
    fi
    systems=offpath,netdata
fi

if [[ "${TUNE_SYSCTL:-0}" == 1 ]]; then
    sysctl -w net.core.rmem_max=33554432 >&2
fi
echo "net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max) net.core.rmem_default=$(cat /proc/sys/net/core/rmem_default)" \
     "net.unix.max_dgram_qlen=$(cat /proc/sys/net/unix/max_dgram_qlen) cores=$(nproc)" >&2

exec python3 "$here/loss_curve.py" --bin-dir "$bin" --systems "$systems" "$@"
