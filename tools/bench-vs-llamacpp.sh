#!/usr/bin/env bash
# Side-by-side speed of edgellm and llama.cpp on the same model files, threads and token counts.
#
#   tools/bench-vs-llamacpp.sh [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r ROUNDS] [TYPES...]
#
# llama.cpp comes from PyPI: the llama-cpp-python 0.3.36 sdist vendors llama.cpp (0c1e570);
# this script builds its `llama-bench` (not the Python bindings, which add 15-20% to decode
# time) with GGML_NATIVE=OFF, AMX off (its AMX path is wrong for Q4_0/Q4_1 on CPUs that have
# it) and AVX/AVX2/FMA/F16C plus whichever of AVX-512 (F, VBMI, VNNI, BF16) and AVX-VNNI this
# CPU has, into .bench/ (gitignored).
# TYPES (default Q4_0 Q4_1 Q8_0) are made from the default Q4_1 model with `edgellm quantize`;
# a TYPE ending in .gguf is a model file used as it is (K-quant files, Gemma-3).
# The two programs run in alternation (ABAB...), ROUNDS rounds (default 3), each round doing
# llama-bench -r 3 and edgellm bench -r 3; the table gives means and edgellm/llama.cpp ratios.
# A benchmark, not a test: CI does not run it. Needs a quiet machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

threads=2 n_prompt=128 n_gen=64 rounds=3
while getopts "t:p:n:r:" opt; do
    case $opt in
    t) threads=$OPTARG ;;
    p) n_prompt=$OPTARG ;;
    n) n_gen=$OPTARG ;;
    r) rounds=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
types=("${@:-Q4_0 Q4_1 Q8_0}")
read -r -a types <<<"${types[*]}"

for tool in jq awk; do
    command -v $tool >/dev/null || { echo "bench-vs-llamacpp: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
work=.bench
mkdir -p "$work"
llama_bench="$work/llama.cpp/build/bin/llama-bench"
if [[ ! -x $llama_bench ]]; then
    command -v cmake >/dev/null || pip install --quiet cmake
    if [[ ! -d $work/llama.cpp ]]; then
        echo "== fetching llama-cpp-python 0.3.36 (sdist) =="
        pip download --quiet --no-deps llama-cpp-python==0.3.36 -d "$work/sdist"
        tar -xzf "$work"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$work"
        mv "$work/llama_cpp_python-0.3.36/vendor/llama.cpp" "$work/llama.cpp"
        rm -rf "$work/llama_cpp_python-0.3.36"
    fi
    # Each extension on only if this CPU has it (a build with one it lacks dies of SIGILL).
    has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
    echo "== building llama-bench (about 4 minutes) =="
    cmake -S "$work/llama.cpp" -B "$work/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
        -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_AVX_VNNI="$(has avx_vnni)" -DGGML_AVX512="$(has avx512f)" \
        -DGGML_AVX512_VBMI="$(has avx512vbmi)" -DGGML_AVX512_VNNI="$(has avx512_vnni)" \
        -DGGML_AVX512_BF16="$(has avx512_bf16)" \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
    cmake --build "$work/llama.cpp/build" --target llama-bench -j "$(nproc)" >/dev/null
fi

cargo build --release --quiet
edgellm=target/release/edgellm
tools/fetch-model.sh >/dev/null
base=models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf

printf '%-22s %-9s %10s %10s %7s\n' type test llama.cpp edgellm ratio
for ty in "${types[@]}"; do
    model=$base
    if [[ $ty == *.gguf ]]; then
        # a model file given directly (e.g. a K-quant or Gemma file): labelled by its name
        model=$ty
        ty=$(basename "$ty" .gguf)
        ty=${ty#SmolLM2-135M-Instruct.}
    elif [[ $ty != Q4_1 ]]; then
        model="$work/SmolLM2-135M-Instruct.$ty.gguf"
        [[ -f $model ]] || "$edgellm" quantize "$base" "$model" "$ty" 2>/dev/null
    fi
    l_pp=() l_tg=() e_pp=() e_tg=()
    for ((round = 0; round < rounds; round++)); do
        out=$("$llama_bench" -m "$model" -p "$n_prompt" -n "$n_gen" -t "$threads" -r 3 -o json 2>/dev/null)
        l_pp+=("$(jq -r --argjson p "$n_prompt" '.[] | select(.n_prompt == $p) | .avg_ts' <<<"$out")")
        l_tg+=("$(jq -r --argjson n "$n_gen" '.[] | select(.n_gen == $n) | .avg_ts' <<<"$out")")
        out=$("$edgellm" bench -m "$model" -p "$n_prompt" -n "$n_gen" -t "$threads" -r 3 --json)
        e_pp+=("$(jq -r '.pp_tokens_per_s[0]' <<<"$out")")
        e_tg+=("$(jq -r '.tg_tokens_per_s[0]' <<<"$out")")
    done
    mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.1f", s / NR}'; }
    lp=$(mean "${l_pp[@]}") lt=$(mean "${l_tg[@]}") ep=$(mean "${e_pp[@]}") et=$(mean "${e_tg[@]}")
    printf '%-22s %-9s %10s %10s %7.2f\n' "$ty" "pp$n_prompt" "$lp" "$ep" "$(awk -v a="$ep" -v b="$lp" 'BEGIN {print a / b}')"
    printf '%-22s %-9s %10s %10s %7.2f\n' "$ty" "tg$n_gen" "$lt" "$et" "$(awk -v a="$et" -v b="$lt" 'BEGIN {print a / b}')"
done
echo "(tokens/s, means of $rounds alternating rounds of 3 repetitions each, $threads threads)"
