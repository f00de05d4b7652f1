#!/usr/bin/env bash
# Installs what building and testing edgellm needs on a Debian 12 (bookworm) x86_64 machine:
#   - the aarch64 cross toolchain: Debian's rustc-web/cargo-web (Rust >= 1.89 at /usr/bin) with
#     the arm64 std (libstd-rust-web-dev:arm64), gcc-aarch64-linux-gnu, libc6-dev-arm64-cross;
#   - the armv7 (32-bit Raspberry Pi OS) cross toolchain: the armhf std
#     (libstd-rust-web-dev:armhf, which pulls libc6:armhf, the loader qemu-arm runs binaries with)
#     and gcc-arm-linux-gnueabihf with libc6-dev-armhf-cross (the linker's view of glibc);
#   - qemu-user, to run the aarch64 and armv7 tests (tools/aarch64-test.sh, tools/armv7-test.sh);
#   - libclang-dev (bindgen in the ggml reference dev-dependency), socat (serial pseudo-terminal
#     pairs), curl (socket API tests), time (/usr/bin/time measures peak RSS in the CLI tests);
#   - the Python packages in tools/requirements-test.txt (gguf checks the GGUF writer; openai,
#     httpx and pyserial are the real clients of `edgellm serve`).
# The host Rust toolchain (rustup, with rustfmt and clippy) is expected to be on PATH already.
#
# Idempotent: when everything is installed it only asks dpkg-query and Python's package metadata
# and returns in under a second. apt runs as root (through sudo when not root); pip runs as the
# calling user, into the python3 that is first on PATH (the one the tests will use).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$repo_root/tools/requirements-test.txt"

# "name" or "name:arch" as dpkg knows them.
apt_packages=(
    rustc-web
    cargo-web
    libstd-rust-web-dev:arm64
    gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross
    qemu-user
    libclang-dev
    socat
    curl
    time
    unzip
    ca-certificates
)

# The armv7 toolchain, installed after the rest and allowed to fail: a Debian mirror that serves
# a stale armhf index (seen here) must not stop everything else from being set up.
# tools/armv7-test.sh --skip-if-missing (what `make test` runs) then says loudly that it skipped.
armv7_packages=(
    libstd-rust-web-dev:armhf
    gcc-arm-linux-gnueabihf
    libc6-dev-armhf-cross
)

log() { printf 'setup-toolchains: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    die "not root and sudo is missing: run this script as root"
fi

[[ "$(uname -m)" == "x86_64" ]] || log "warning: written for an x86_64 host, this is $(uname -m)"
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script needs Debian (bookworm)"

# --- Debian packages ----------------------------------------------------------------------------

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == "ii " ]]
}

# apt-get install "$@" with `rounds` rounds of (update, up to 3 tries) then install: `apt-get
# update` can fail on one index while a mirror syncs; what counts is whether the packages then
# install. Returns non-zero when no round installed them.
apt_install() {
    local rounds=$1
    shift
    local apt_opts=(-y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 --no-install-recommends)
    local round try
    for ((round = 1; round <= rounds; round++)); do
        for try in 1 2 3; do
            if "${as_root[@]}" apt-get update -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300; then
                break
            fi
            if ((try < 3)); then
                log "apt-get update failed (round $round, try $try); retrying in $((try * 5)) s"
                sleep $((try * 5))
            else
                log "apt-get update failed 3 times; installing with the package lists there are"
            fi
        done
        # `env` because sudo drops the caller's environment.
        if "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install "${apt_opts[@]}" "$@"; then
            return 0
        fi
        if ((round < rounds)); then
            log "apt-get install failed (round $round of $rounds); retrying in $((round * 20)) s"
            sleep $((round * 20))
        fi
    done
    return 1
}

add_dpkg_arch() {
    if ! dpkg --print-foreign-architectures | grep -qx "$1"; then
        log "adding the $1 dpkg architecture"
        "${as_root[@]}" dpkg --add-architecture "$1"
    fi
}

missing=()
for p in "${apt_packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip)
fi

if ((${#missing[@]} > 0)); then
    log "missing Debian packages: ${missing[*]}"
    add_dpkg_arch arm64
    apt_install 3 "${missing[@]}" || die "could not install: ${missing[*]} (see the apt-get output above)"
else
    log "Debian packages: all present"
fi

missing_armv7=()
for p in "${armv7_packages[@]}"; do
    is_installed "$p" || missing_armv7+=("$p")
done
if ((${#missing_armv7[@]} > 0)); then
    log "missing armv7 packages: ${missing_armv7[*]}"
    add_dpkg_arch armhf
    apt_install 2 "${missing_armv7[@]}" ||
        log "WARNING: could not install the armv7 toolchain (${missing_armv7[*]}); the armv7 tests will be skipped until it installs"
fi

# --- sanity of the cross toolchain -------------------------------------------------------------

[[ -x /usr/bin/rustc && -x /usr/bin/cargo && -x /usr/bin/rustdoc ]] ||
    die "/usr/bin/rustc, /usr/bin/cargo or /usr/bin/rustdoc missing after installing rustc-web/cargo-web"
[[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ]] ||
    die "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib missing: libstd-rust-web-dev:arm64 is not installed"
[[ -e /lib/ld-linux-aarch64.so.1 ]] ||
    die "/lib/ld-linux-aarch64.so.1 missing: qemu-aarch64 cannot start aarch64 binaries (libc6:arm64)"
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || die "aarch64-linux-gnu-gcc not on PATH"
command -v qemu-aarch64 >/dev/null 2>&1 || die "qemu-aarch64 not on PATH"
host_std="/usr/lib/rustlib/x86_64-unknown-linux-gnu/lib"
deb_rustc_version="$(/usr/bin/rustc --version)"
compgen -G "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib/libstd-*.rlib" >/dev/null ||
    die "no libstd rlib under /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib"
# The armv7 toolchain is checked by tools/armv7-test.sh, which names what is missing.
[[ -d "$host_std" ]] || die "$host_std missing: libstd-rust-web-dev (amd64) is not installed"

# --- Python packages ----------------------------------------------------------------------------

# Exit 0 when every `name==version` line of the requirements file is installed at that version.
requirements_met() {
    python3 - "$requirements" <<'EOF'
import sys
from importlib import metadata

for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        have = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if version and have != version.strip():
        sys.exit(1)
EOF
}

if requirements_met; then
    log "Python test packages: all present"
else
    log "installing Python test packages from $requirements"
    pip_opts=(-q --disable-pip-version-check --no-warn-script-location --root-user-action=ignore
        -r "$requirements")
    # Debian's own python3 refuses installs outside a venv (PEP 668): use the user site there.
    if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_opts+=(--user --break-system-packages)
    fi
    python3 -m pip install "${pip_opts[@]}" || die "pip could not install $requirements"
    requirements_met || die "installed $requirements but python3 still does not see it"
fi

# --- host Rust toolchain ------------------------------------------------------------------------

if ! command -v cargo >/dev/null 2>&1; then
    die "no cargo on PATH: install the host Rust toolchain (rustup) first"
fi
for component in rustfmt clippy; do
    if ! cargo "${component#rust}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 ||
            die "$(command -v cargo) has no \`cargo ${component#rust}\` and there is no rustup: put rustup's toolchain first on PATH"
        log "cargo ${component#rust} missing; running rustup component add $component"
        rustup component add "$component" || die "rustup could not add $component"
    fi
done

armv7="armv7 toolchain missing"
tools_armv7_missing="$("$repo_root/tools/armv7-test.sh" --check-toolchain 2>&1 >/dev/null || true)"
[[ -n $tools_armv7_missing ]] || armv7="armv7"
log "ok: host $(rustc --version | cut -d' ' -f1-2), aarch64 and $armv7 via ${deb_rustc_version%% (*}, $(qemu-aarch64 --version | head -n1 | cut -d' ' -f1-3)"
