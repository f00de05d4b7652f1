#!/usr/bin/env bash
# Builds the workspace tests for aarch64-unknown-linux-gnu and runs them under qemu-aarch64, once
# per emulated CPU, so both NEON paths (with and without dotprod) get exercised.
#
#   tools/aarch64-test.sh [--cpu CPU]... [cargo test args] [-- test binary args]
#
#   --cpu CPU   qemu CPU model; repeat it or give a comma list to run several. Useful ones:
#               cortex-a72 (Raspberry Pi 4: NEON, no dotprod), cortex-a76 (Raspberry Pi 5: NEON
#               + dotprod), max (qemu's default: everything, including SVE and i8mm).
#               Default: $AARCH64_CPUS if set, else max.
#   --no-run    build the tests only.
#
# Examples:
#   tools/aarch64-test.sh -p edgellm-runtime
#   tools/aarch64-test.sh --cpu cortex-a72,cortex-a76 -p edgellm-runtime kernels -- --nocapture
#
# The build uses Debian's rustc-web (/usr/bin/rustc, /usr/bin/cargo, /usr/bin/rustdoc) with its
# arm64 std, because rustup cannot add targets on our machines; the linker, the qemu runner and
# the C cross compiler come from .cargo/config.toml. `tools/setup-toolchains.sh` installs them.
# The tests are compiled once (`--no-run`); each CPU then only reruns them.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="aarch64-unknown-linux-gnu"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

cpus=()
build_only=0
cargo_args=()
test_args=()
while (($# > 0)); do
    case "$1" in
    --cpu)
        (($# >= 2)) || {
            echo "aarch64-test: --cpu needs a value" >&2
            exit 2
        }
        IFS=', ' read -r -a more <<<"$2"
        cpus+=("${more[@]}")
        shift 2
        ;;
    --cpu=*)
        IFS=', ' read -r -a more <<<"${1#--cpu=}"
        cpus+=("${more[@]}")
        shift
        ;;
    --no-run)
        build_only=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        test_args=("$@")
        break
        ;;
    *)
        cargo_args+=("$1")
        shift
        ;;
    esac
done
if ((${#cpus[@]} == 0)); then
    IFS=', ' read -r -a cpus <<<"${AARCH64_CPUS:-max}"
fi

for tool in /usr/bin/cargo /usr/bin/rustc /usr/bin/rustdoc; do
    [[ -x "$tool" ]] || {
        echo "aarch64-test: $tool missing: run tools/setup-toolchains.sh (make setup)" >&2
        exit 1
    }
done
command -v qemu-aarch64 >/dev/null 2>&1 || {
    echo "aarch64-test: qemu-aarch64 missing: run tools/setup-toolchains.sh (make setup)" >&2
    exit 1
}
# `qemu-aarch64 -cpu help` lists the models but exits with status 1.
known_cpus="$(qemu-aarch64 -cpu help 2>&1 | tail -n +2 | tr -s ' \n' ' ' || true)"
for cpu in "${cpus[@]}"; do
    [[ -z "${known_cpus// /}" || " $known_cpus " == *" $cpu "* ]] || {
        echo "aarch64-test: qemu-aarch64 has no cpu '$cpu' (it has:$known_cpus)" >&2
        exit 2
    }
done

cd "$repo_root"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
# A rustup toolchain override from the caller's environment would not apply to /usr/bin/cargo.
unset RUSTUP_TOOLCHAIN CARGO

echo "== aarch64 build ($(/usr/bin/rustc --version | cut -d' ' -f1-2), target $target) =="
/usr/bin/cargo test --target "$target" --no-run "${cargo_args[@]}"
((build_only)) && exit 0

for cpu in "${cpus[@]}"; do
    echo
    echo "== aarch64 tests (qemu-aarch64, cpu $cpu) =="
    start=$SECONDS
    # The model tests run on the kernels EDGELLM_KERNELS names (scalar when unset): give each
    # emulated core the NEON path its board would use, unless the caller chose one.
    kernels="${EDGELLM_KERNELS:-}"
    if [[ -z $kernels ]]; then
        case $cpu in
        cortex-a53 | cortex-a57 | cortex-a72) kernels=neon ;;
        cortex-a55 | cortex-a76 | cortex-a78* | neoverse-n1 | max) kernels=neon-dotprod ;;
        esac
    fi
    echo "(EDGELLM_KERNELS=${kernels:-scalar})"
    env QEMU_CPU="$cpu" ${kernels:+EDGELLM_KERNELS=$kernels} \
        /usr/bin/cargo test --target "$target" "${cargo_args[@]}" "${test_args[@]}"
    echo "== aarch64 tests (qemu-aarch64, cpu $cpu): passed in $((SECONDS - start)) s =="
done
