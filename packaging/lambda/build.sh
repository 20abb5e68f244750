#!/usr/bin/env bash
# Build the Lambda layer zips, per architecture (x86_64, arm64):
#   offpath-layer-<arch>.zip                  extensions/offpath
#   offpath-datadog-compat-layer-<arch>.zip   extensions/datadog-agent (Datadog's extension file name: the
#                                             Datadog libraries find it and send DogStatsD to it)
# Both hold the same offpath-lambda binary, built with the `layer` profile (size-optimised, stripped)
# and linked statically (+crt-static), so it runs on every Lambda runtime whatever its glibc (Amazon
# Linux 2 has 2.26, Amazon Linux 2023 has 2.34). The binary registers under its file name.
#
# Usage: bash packaging/lambda/build.sh [x86_64] [arm64]      (default: both)
# Output: $OFFPATH_LAYER_OUT (default target/lambda-layer/). Installs what it needs: the Rust targets
# (rustup), a C cross compiler for the other architecture (Debian: gcc-<arch>-linux-gnu), python3 or
# zip to write the archive.
set -euo pipefail
cd "$(dirname "$0")/../.."

arches=("$@")
[ ${#arches[@]} -eq 0 ] && arches=(x86_64 arm64)
out="${OFFPATH_LAYER_OUT:-target/lambda-layer}"
target_dir="${CARGO_TARGET_DIR:-target}"
host="$(uname -m)"
apt_updated=0

# Install Debian packages that provide the given commands, when missing.
need() {
  local cmd="$1"; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "build.sh: $cmd is missing; install the Debian packages: $*" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  echo "build.sh: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# write_zip <binary> <name in the zip> <zip path>: one executable file, fixed date (reproducible).
write_zip() {
  local bin="$1" name="$2" zip_path="$3"
  rm -f "$zip_path"
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$bin" "$name" "$zip_path" <<'PY'
import sys, zipfile
src, name, dst = sys.argv[1], sys.argv[2], sys.argv[3]
info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
info.external_attr = (0o100755 << 16)  # a regular file, executable: Lambda runs every file in extensions/
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
PY
  else
    need zip zip
    local stage
    stage="$(mktemp -d)"
    mkdir -p "$stage/extensions"
    install -m 0755 "$bin" "$stage/$name"
    (cd "$stage" && TZ=UTC touch -t 202401010000 "$name" && zip -q -X -9 "$zip_path" "$name")
    rm -rf "$stage"
  fi
}

mkdir -p "$out"
for arch in "${arches[@]}"; do
  case "$arch" in
    x86_64) triple=x86_64-unknown-linux-gnu; cpu=x86_64; gnu=x86-64 ;;
    arm64 | aarch64) arch=arm64; triple=aarch64-unknown-linux-gnu; cpu=aarch64; gnu=aarch64 ;;
    *) echo "build.sh: unknown architecture $arch (x86_64 or arm64)" >&2; exit 2 ;;
  esac
  if [ "$host" = "$cpu" ]; then
    cc=gcc
    need gcc gcc libc6-dev
  else
    cc="$cpu-linux-gnu-gcc"
    need "$cc" "gcc-$gnu-linux-gnu" "libc6-dev-$( [ "$cpu" = aarch64 ] && echo arm64 || echo amd64 )-cross"
  fi
  if ! command -v rustup >/dev/null 2>&1; then
    if ! rustc --print target-libdir --target "$triple" >/dev/null 2>&1 \
      || [ ! -d "$(rustc --print target-libdir --target "$triple")" ]; then
      echo "build.sh: the Rust standard library for $triple is missing and rustup is not installed;" \
        "install rustup (https://rustup.rs) and run: rustup target add $triple" >&2
      exit 1
    fi
  elif ! rustup target list --installed | grep -qx "$triple"; then
    echo "build.sh: rustup target add $triple"
    rustup target add "$triple"
  fi

  upper="$(echo "$triple" | tr 'a-z-' 'A-Z_')"
  lower="$(echo "$triple" | tr '-' '_')"
  export "CARGO_TARGET_${upper}_LINKER=$cc"
  export "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static"
  export "CC_${lower}=$cc"
  export "AR_${lower}=$( [ "$cc" = gcc ] && echo ar || echo "$cpu-linux-gnu-ar" )"

  echo "build.sh: building offpath-lambda for $triple"
  cargo build --locked --quiet --profile layer --target "$triple" -p offpath-lambda --bin offpath-lambda
  bin="$target_dir/$triple/layer/offpath-lambda"

  out_abs="$(cd "$out" && pwd)"
  write_zip "$bin" extensions/offpath "$out_abs/offpath-layer-$arch.zip"
  write_zip "$bin" extensions/datadog-agent "$out_abs/offpath-datadog-compat-layer-$arch.zip"
  printf 'build.sh: binary %s bytes\n' "$(stat -c %s "$bin")"
  for zip_path in "$out_abs/offpath-layer-$arch.zip" "$out_abs/offpath-datadog-compat-layer-$arch.zip"; do
    printf 'build.sh: %s  zip %s bytes\n' "$zip_path" "$(stat -c %s "$zip_path")"
  done
done
