#!/usr/bin/env bash
# Builds the workspace tests for armv7-unknown-linux-gnueabihf (32-bit Raspberry Pi OS) and runs
# them under qemu-arm, then checks that the cross-built `edgellm inspect` refuses a model file
# larger than a 32-bit process can map with a clear error and exit status 1 (not a signal).
#
#   tools/armv7-test.sh [--cpu CPU]... [--no-run] [--no-inspect] [cargo test args] [-- test args]
#
#   --cpu CPU     qemu-arm CPU model; repeat it or give a comma list to run several. cortex-a7 is
#                 a Raspberry Pi 2 v1.1 (ARMv7-A, NEON, VFPv4); qemu-arm 7.2 has no Cortex-A53
#                 (Pi 2 v1.2, Pi 3, Zero 2 W in 32-bit mode), and cortex-a15 is the other core
#                 with the same features. Default: $ARMV7_CPUS if set, else cortex-a7.
#   --no-run      build the tests and the binary only.
#   --no-inspect  skip the `edgellm inspect` check (and building the binary).
#   --check-toolchain
#                 only check that the armv7 toolchain is installed (status 1 and what is missing
#                 on stderr when it is not).
#   --skip-if-missing
#                 when the toolchain is missing (tools/setup-toolchains.sh could not install it,
#                 e.g. behind a Debian mirror with a stale armhf index), say so in a banner and
#                 exit 0 instead of failing; `make test` uses it so that a mirror cannot fail
#                 the whole run. Without it a missing toolchain is an error.
#
# Examples:
#   tools/armv7-test.sh -p edgellm-runtime
#   tools/armv7-test.sh -p edgellm-runtime --test kernels_vs_scalar -- --nocapture
#
# The kernels are the scalar ones (NEON intrinsics for 32-bit Arm are not stable Rust), built
# with `-C target-cpu=cortex-a7` so LLVM auto-vectorizes them with NEON (.cargo/config.toml).
# The build uses Debian's rustc-web (/usr/bin/rustc, /usr/bin/cargo, /usr/bin/rustdoc) with its
# armhf std, as tools/aarch64-test.sh does for arm64; `tools/setup-toolchains.sh` installs them.
# The tests are compiled once (`--no-run`); each CPU then only reruns them.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="armv7-unknown-linux-gnueabihf"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}
die() {
    echo "armv7-test: $*" >&2
    exit 1
}

cpus=()
check_only=0
skip_if_missing=0
build_only=0
inspect_check=1
cargo_args=()
test_args=()
while (($# > 0)); do
    case "$1" in
    --cpu)
        (($# >= 2)) || {
            echo "armv7-test: --cpu needs a value" >&2
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
    --no-inspect)
        inspect_check=0
        shift
        ;;
    --check-toolchain)
        check_only=1
        shift
        ;;
    --skip-if-missing)
        skip_if_missing=1
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
    IFS=', ' read -r -a cpus <<<"${ARMV7_CPUS:-cortex-a7}"
fi

# What is missing of the toolchain, one line each (nothing when complete).
toolchain_gaps() {
    local tool
    for tool in /usr/bin/cargo /usr/bin/rustc /usr/bin/rustdoc; do
        [[ -x "$tool" ]] || echo "$tool"
    done
    compgen -G "/usr/lib/rustlib/$target/lib/libstd-*.rlib" >/dev/null ||
        echo "the Rust std for $target (libstd-rust-web-dev:armhf)"
    [[ -e /lib/ld-linux-armhf.so.3 ]] || echo "/lib/ld-linux-armhf.so.3 (libc6:armhf)"
    command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || echo "arm-linux-gnueabihf-gcc"
    command -v qemu-arm >/dev/null 2>&1 || echo "qemu-arm (qemu-user)"
}
gaps="$(toolchain_gaps)"
if ((check_only)); then
    [[ -z $gaps ]] || {
        echo "armv7 toolchain missing: ${gaps//$'\n'/, }" >&2
        exit 1
    }
    exit 0
fi
if [[ -n $gaps ]]; then
    if ((skip_if_missing)); then
        echo "=================================================================================="
        echo "== armv7 tests SKIPPED: the armv7 toolchain is not installed (${gaps//$'\n'/, })."
        echo "== tools/setup-toolchains.sh could not install it (see its output above)."
        echo "=================================================================================="
        exit 0
    fi
    die "missing: ${gaps//$'\n'/, }; run tools/setup-toolchains.sh (make setup)"
fi
# `qemu-arm -cpu help` lists the models but exits with status 1.
known_cpus="$(qemu-arm -cpu help 2>&1 | tail -n +2 | tr -s ' \n' ' ' || true)"
for cpu in "${cpus[@]}"; do
    [[ -z "${known_cpus// /}" || " $known_cpus " == *" $cpu "* ]] || {
        echo "armv7-test: qemu-arm has no cpu '$cpu' (it has:$known_cpus)" >&2
        exit 2
    }
done

cd "$repo_root"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
# A rustup toolchain override from the caller's environment would not apply to /usr/bin/cargo.
unset RUSTUP_TOOLCHAIN CARGO

echo "== armv7 build ($(/usr/bin/rustc --version | cut -d' ' -f1-2), target $target) =="
start=$SECONDS
/usr/bin/cargo test --target "$target" --no-run "${cargo_args[@]}"
if ((inspect_check)); then
    # The test profile (optimized, like the tests) shares the dependencies the tests just built.
    /usr/bin/cargo build --target "$target" --profile test -p edgellm --bin edgellm
fi
echo "== armv7 build: $((SECONDS - start)) s =="
((build_only)) && exit 0

for cpu in "${cpus[@]}"; do
    echo
    echo "== armv7 tests (qemu-arm, cpu $cpu) =="
    start=$SECONDS
    QEMU_CPU="$cpu" /usr/bin/cargo test --target "$target" "${cargo_args[@]}" "${test_args[@]}"
    echo "== armv7 tests (qemu-arm, cpu $cpu): passed in $((SECONDS - start)) s =="
done

((inspect_check)) || exit 0

# `edgellm inspect` on a 5 GiB GGUF file (sparse: it takes no disk): a 32-bit process cannot map
# it, so the binary must say so (file size and limit) and exit with status 1, not die of a signal.
echo
echo "== armv7 edgellm inspect of a 5 GiB file (qemu-arm, cpu ${cpus[0]}) =="
edgellm="target/$target/debug/edgellm"
[[ -x "$edgellm" ]] || die "cargo built the binary but $edgellm is missing"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/edgellm-armv7.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
big="$scratch/five-gib.gguf"
# A valid GGUF v3 header: no tensors, one kv (general.architecture = "llama"), little-endian.
{
    printf 'GGUF\x03\x00\x00\x00'
    printf '\x00\x00\x00\x00\x00\x00\x00\x00' # tensor count
    printf '\x01\x00\x00\x00\x00\x00\x00\x00' # kv count
    printf '\x14\x00\x00\x00\x00\x00\x00\x00general.architecture'
    printf '\x08\x00\x00\x00'                 # value type: string
    printf '\x05\x00\x00\x00\x00\x00\x00\x00llama'
} >"$big"
truncate -s 5G "$big"
size="$(stat -c %s "$big")"
status=0
QEMU_CPU="${cpus[0]}" qemu-arm "$edgellm" inspect "$big" >"$scratch/out" 2>"$scratch/err" || status=$?
cat "$scratch/err"
((status == 1)) ||
    die "edgellm inspect of a $size-byte file exited with status $status (want 1: an error, not a crash or success)"
grep -q "$size bytes" "$scratch/err" || die "the error does not name the file size ($size bytes)"
grep -q "32-bit" "$scratch/err" || die "the error does not name the 32-bit limit"
# The same header in a small file inspects fine: the refusal is about the size alone.
truncate -s 4096 "$big"
QEMU_CPU="${cpus[0]}" qemu-arm "$edgellm" inspect "$big" >"$scratch/out" ||
    die "edgellm inspect of the same header in a 4096-byte file failed"
grep -q "llama" "$scratch/out" || die "edgellm inspect of the 4096-byte file does not show its architecture"
echo "== armv7 edgellm inspect: refused the $size-byte file with status 1, read the small one =="
