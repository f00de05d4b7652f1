#!/usr/bin/env bash
# Counts the aarch64 instructions edgellm executes per generated token, under QEMU user mode
# with a small TCG plugin (tools/qemu-insn-count/insn_count.c): the ARM efficiency figure the
# kernels issue asks for, measurable without a board and independent of the host's load.
#
#   tools/arm-insn-count.sh [--model PATH] [--cpu "cortex-a76 cortex-a72"] [--tokens 16] [--profile]
#
# Method: the same 20-token prompt is run twice, single-threaded, greedy, end-of-text ignored:
# once generating 1 token and once generating 1+TOKENS. The difference of the two instruction
# totals, divided by TOKENS, is the cost of one decode step at positions 20..20+TOKENS (the
# whole step: forward pass, sampling, detokenization). llama.cpp's figure for the same measure
# (armv8.2-a+dotprod build, SmolLM2 Q4_1, positions 20-36, one thread) is 118 M instructions.
# cortex-a76 runs the NEON dotprod kernels (Raspberry Pi 5), cortex-a72 the plain NEON ones
# (Raspberry Pi 4). Prints one JSON object per CPU; with --profile, also the functions that
# execute the most instructions per token (tools/qemu-insn-count/profile.py).
#
# Needs: gcc, qemu-user, and the aarch64 release binary (built here by tools/cross-build.sh
# when missing or older than the sources).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

model="models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
cpus="cortex-a76 cortex-a72"
tokens=16
profile=0
# 20 tokens with SmolLM2's tokenizer.
prompt="Write a short story about a robot who learns to paint, and tell it in simple words for a"

log() { printf 'arm-insn-count: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

while (($# > 0)); do
    case "$1" in
    --model) model="$2"; shift 2 ;;
    --cpu) cpus="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --profile) profile=1; shift ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $1" ;;
    esac
done
[[ $tokens =~ ^[1-9][0-9]*$ ]] || die "--tokens must be a positive integer"
[[ -f $model ]] || die "$model not found (make model)"
command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 not found (make setup)"
command -v gcc >/dev/null || die "gcc not found (make setup)"

work="target/insn-count"
mkdir -p "$work"
plugin="$work/libinsn_count.so"
src="tools/qemu-insn-count/insn_count.c"
if [[ ! -f $plugin || $src -nt $plugin ]]; then
    gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$plugin" "$src"
fi

# The unstripped binary the stripped board binary is copied from: same code, with symbols.
bin="target/aarch64-unknown-linux-gnu/release/edgellm"
newest_src="$(find runtime models hal tools/src Cargo.toml Cargo.lock -newer "$bin" -type f 2>/dev/null | head -1 || true)"
if [[ ! -x $bin || -n $newest_src ]]; then
    log "building the aarch64 binary (tools/cross-build.sh)"
    tools/cross-build.sh >&2
fi

# Instructions executed by one run generating $1 tokens on CPU $2 (per block into $3 when set).
count() {
    local n=$1 cpu=$2 tbs=${3:-} out="$work/count.txt"
    local args="$plugin,out=$out"
    [[ -z $tbs ]] || args+=",tbs=$tbs"
    rm -f "$out"
    qemu-aarch64 -cpu "$cpu" -plugin "$args" "$bin" run -m "$model" -t 1 \
        --temp 0 --ignore-eos -n "$n" -p "$prompt" >/dev/null 2>"$work/run.log" ||
        die "edgellm run failed under qemu ($cpu): $(tail -3 "$work/run.log")"
    [[ -s $out ]] || die "the plugin wrote no count"
    cat "$out"
}

for cpu in $cpus; do
    base_tbs="" full_tbs=""
    if ((profile)); then
        base_tbs="$work/base-$cpu.tbs" full_tbs="$work/full-$cpu.tbs"
    fi
    base=$(count 1 "$cpu" "$base_tbs")
    full=$(count $((1 + tokens)) "$cpu" "$full_tbs")
    per=$(((full - base) / tokens))
    printf '{"cpu": "%s", "model": "%s", "positions": "20-%d", "insns_per_token": %d, "insns_prompt_and_load": %d, "vs_llama_cpp_118M": %s}\n' \
        "$cpu" "$(basename "$model")" $((20 + tokens)) "$per" "$base" \
        "$(awk -v p="$per" 'BEGIN { printf "%.3f", p / 118e6 }')"
    if ((profile)); then
        load_base="$(qemu-aarch64 -d page "$bin" --version 2>&1 >/dev/null | awk '/^start_code/ { print $2 }')"
        python3 tools/qemu-insn-count/profile.py "$bin" "$load_base" "$base_tbs" "$full_tbs" "$tokens"
    fi
done
