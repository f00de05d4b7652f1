#!/usr/bin/env bash
# Makes the llama.cpp reference for `edgellm quantize` to K-quant mixtures:
# models/tests/fixtures/kquant_tensor_sha256.json.
#
#   tools/make-kquant-reference.sh [-t THREADS]
#
# With the llama.cpp that llama-cpp-python 0.3.36 vendors (unpacked and configured in
# .bench/llama.cpp by tools/bench-vs-llamacpp.sh: GGML_NATIVE=OFF, AMX off), it builds
# llama-quantize and llama-perplexity, makes Q4_K_M, Q5_K_M and Q6_K files from the default
# Q4_1 model (llama-quantize --allow-requantize, as a user would), and records for each:
# llama.cpp's file_type, every tensor's type and the sha256 of its data bytes (python `gguf`),
# and llama-perplexity on GPL-3 at c=256 and c=512 (-b C, THREADS threads, default 2).
# Idempotent: builds and files already made are reused. The .gguf files stay in .bench/
# (gitignored); only the small JSON goes into git.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

threads=2
while getopts "t:" opt; do
    case $opt in
    t) threads=$OPTARG ;;
    *) exit 2 ;;
    esac
done

llama=.bench/llama.cpp
build=$llama/build
work=.bench/kquant
fixture=models/tests/fixtures/kquant_tensor_sha256.json
base=models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
text=/usr/share/common-licenses/GPL-3
types=(Q4_K_M Q5_K_M Q6_K)

[[ -f $build/CMakeCache.txt ]] || {
    echo "make-kquant-reference: $build is not configured; run tools/bench-vs-llamacpp.sh first" >&2
    exit 1
}
[[ -f $base ]] || tools/fetch-model.sh >/dev/null
python3 -c 'import gguf' 2>/dev/null || {
    echo "make-kquant-reference: needs the python gguf package (pip install gguf)" >&2
    exit 1
}

if [[ ! -x $build/bin/llama-quantize || ! -x $build/bin/llama-perplexity ]]; then
    echo "== building llama-quantize and llama-perplexity =="
    cmake --build "$build" --target llama-quantize llama-perplexity -j "$(nproc)" >/dev/null
fi

mkdir -p "$work" "$(dirname "$fixture")"
for ty in "${types[@]}"; do
    out="$work/SmolLM2-135M-Instruct.$ty.gguf"
    if [[ ! -f $out ]]; then
        echo "== llama-quantize $ty =="
        "$build/bin/llama-quantize" --allow-requantize "$base" "$out.partial" "$ty" "$threads" \
            >"$work/quantize-$ty.log" 2>&1
        mv "$out.partial" "$out"
    fi
    for ctx in 256 512; do
        log="$work/perplexity-$ty-c$ctx.log"
        if ! grep -q 'Final estimate' "$log" 2>/dev/null; then
            echo "== llama-perplexity $ty c=$ctx =="
            "$build/bin/llama-perplexity" -m "$out" -f "$text" -c "$ctx" -b "$ctx" -t "$threads" \
                >"$log" 2>&1
        fi
    done
done

# The sdist carries no git history, so its build-info says "unknown"; the bench script names
# the commit llama-cpp-python 0.3.36 vendors.
commit=$(grep -o 'LLAMA_COMMIT = "[^"]*"' "$build/common/build-info.cpp" | cut -d'"' -f2 || true)
[[ -n $commit && $commit != unknown ]] || commit=0c1e570
python3 - "$fixture" "$work" "$threads" "$commit" "${types[@]}" <<'EOF'
import hashlib, json, os, re, sys
import gguf

fixture, work, threads, commit, *types = sys.argv[1:]
files = {}
for ty in types:
    path = os.path.join(work, f"SmolLM2-135M-Instruct.{ty}.gguf")
    r = gguf.GGUFReader(path)
    ftype = int(r.fields["general.file_type"].parts[-1][0])
    tensors = {}
    for t in r.tensors:
        tensors[t.name] = {
            "type": t.tensor_type.name,
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
        }
    entry = {"file_type": ftype, "file_bytes": os.path.getsize(path)}
    for ctx in (256, 512):
        log = open(os.path.join(work, f"perplexity-{ty}-c{ctx}.log")).read()
        m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
        chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
        entry[f"ppl_c{ctx}"] = float(m.group(1))
        entry[f"ppl_c{ctx}_pm"] = float(m.group(2))
        entry[f"chunks_c{ctx}"] = int(chunks.group(1))
    entry["tensors"] = tensors
    files[ty] = entry

doc = {
    "reference": f"llama.cpp {commit} as vendored by llama-cpp-python 0.3.36, x86_64 build with "
                 "GGML_NATIVE=OFF, AVX2/FMA/F16C (plus this CPU's AVX-512 extensions), AMX off",
    "made_by": "tools/make-kquant-reference.sh",
    "input": "models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c952...), "
             "llama-quantize --allow-requantize IN OUT TYPE",
    "perplexity_method": f"llama-perplexity -f /usr/share/common-licenses/GPL-3 -c C -b C -t {threads}: "
                         "non-overlapping chunks of C tokens, second half of each scored",
    "note": "tensors: each tensor's ggml type and the sha256 of its data bytes in llama-quantize's file",
    "files": files,
}
with open(fixture, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=False)
    f.write("\n")
print(f"wrote {fixture}")
EOF
