#!/usr/bin/env bash
# Builds the `edgellm` release binary for a board, strips it, checks that it starts (under
# qemu-user), and gathers what install.sh needs on the board into one folder:
#
#   target/dist/TARGET/      (aarch64-unknown-linux-gnu by default)
#       edgellm            stripped release binary
#       install.sh         run it on the board (as root)
#       edgellm.service    the systemd unit install.sh installs
#       board-configs/     every board config (install.sh copies the one you name)
#
#   tools/cross-build.sh [--target aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf]
#
# Then: scp -r target/dist/aarch64-unknown-linux-gnu pi@board:edgellm  (and the model file), and
# on the board: sudo edgellm/install.sh --board rpi5 --model SmolLM2-135M-Instruct.Q4_1.gguf
#
# The build uses Debian's rustc-web (/usr/bin/rustc, /usr/bin/cargo) with its arm64 or armhf std,
# the linker, C cross compiler and rustflags from .cargo/config.toml, as tools/aarch64-test.sh and
# tools/armv7-test.sh do; tools/setup-toolchains.sh installs them. aarch64 serves Raspberry Pi
# 3/4/5 and Zero 2 W on a 64-bit OS and Jetson; armv7 serves 32-bit Raspberry Pi OS on a Pi 2
# (v1.1 or later), 3, 4 or Zero 2 W (NEON required; it runs the scalar kernels, vectorized by the
# compiler, and maps model files of at most 2 GiB). Idempotent: a second run only re-checks and
# re-copies.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="aarch64-unknown-linux-gnu"

log() { printf 'cross-build: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

while (($# > 0)); do
    case "$1" in
    --target)
        (($# >= 2)) || die "--target needs a value"
        target="$2"
        shift 2
        ;;
    --target=*)
        target="${1#--target=}"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$target" in
aarch64-unknown-linux-gnu)
    strip_tool="aarch64-linux-gnu-strip"
    objdump_tool="aarch64-linux-gnu-objdump"
    qemu="qemu-aarch64"
    ;;
armv7-unknown-linux-gnueabihf)
    strip_tool="arm-linux-gnueabihf-strip"
    objdump_tool="arm-linux-gnueabihf-objdump"
    qemu="qemu-arm"
    ;;
*) die "target '$target' is not supported (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" ;;
esac

for tool in /usr/bin/cargo /usr/bin/rustc; do
    [[ -x "$tool" ]] || die "$tool missing: run tools/setup-toolchains.sh (make setup)"
done
[[ -d "/usr/lib/rustlib/$target/lib" ]] ||
    die "no Rust std for $target under /usr/lib/rustlib: run tools/setup-toolchains.sh (make setup)"
for tool in "$strip_tool" "$objdump_tool" "$qemu"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not on PATH: run tools/setup-toolchains.sh (make setup)"
done

cd "$repo_root"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
# A rustup toolchain override from the caller's environment would not apply to /usr/bin/cargo.
unset RUSTUP_TOOLCHAIN CARGO

log "building edgellm for $target with $(/usr/bin/rustc --version | cut -d' ' -f1-2)"
/usr/bin/cargo build --release --locked --target "$target" -p edgellm --bin edgellm

built="target/$target/release/edgellm"
[[ -f "$built" ]] || die "cargo succeeded but $built is missing"

dist="target/dist/$target"
mkdir -p "$dist/board-configs"
# Strip a copy: the unstripped binary stays cargo's, so the next build is still incremental.
"$strip_tool" --strip-all -o "$dist/edgellm.tmp" "$built"
chmod 0755 "$dist/edgellm.tmp"
mv -f "$dist/edgellm.tmp" "$dist/edgellm"
install -m 0755 tools/install.sh "$dist/install.sh"
install -m 0644 tools/edgellm.service "$dist/edgellm.service"
install -m 0644 board-configs/*.toml "$dist/board-configs/"

# The binary must start on the target's CPU: --version touches the loader, libc and clap.
version="$("$qemu" "$dist/edgellm" --version)" ||
    die "$qemu $dist/edgellm --version failed: the binary does not run"

# The board's glibc must be at least the newest symbol version the binary links against (the
# build machine's Debian 12 glibc sets it).
glibc="$("$objdump_tool" -T "$dist/edgellm" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
log "needs ${glibc/_/ >= } on the board (Raspberry Pi OS bookworm: 2.36, Ubuntu 22.04/JetPack 6: 2.35)"

bytes="$(stat -c %s "$dist/edgellm")"
mib="$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
log "ok: $version runs under $qemu"
printf '%s\t%s bytes (%s MiB)\n' "$repo_root/$dist/edgellm" "$bytes" "$mib"
