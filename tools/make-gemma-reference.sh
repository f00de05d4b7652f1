#!/usr/bin/env bash
# Makes the llama.cpp reference for Gemma-3-270M (Q4_K_M): models/tests/fixtures/greedy_gemma3.json
# (tokenization cases, greedy generations) and models/tests/fixtures/perplexity_gemma3.json.
#
#   tools/make-gemma-reference.sh [-t THREADS]
#
# With the llama.cpp that llama-cpp-python vendors (unpacked and configured in .bench/llama.cpp
# by tools/bench-vs-llamacpp.sh: GGML_NATIVE=OFF, AMX off), it builds the small driver
# tools/reference/llama_reference.cpp against the built static libraries, records
# llama_tokenize's ids for the tokenization cases and the greedy generations (see the driver's
# header for the exact method), and runs llama-perplexity on GPL-3 at c=256, 512 and 1024 (-b C,
# THREADS threads, default 2; at 1024 the scored second halves exercise the 512-position sliding
# window). Idempotent: builds and perplexity logs already made are reused.
# Work files stay in .bench/gemma3 (gitignored); only the small JSON goes into git.
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
work=.bench/gemma3
model=models/gguf/gemma-3-270m-q4_k_m.gguf
greedy_fixture=models/tests/fixtures/greedy_gemma3.json
ppl_fixture=models/tests/fixtures/perplexity_gemma3.json
text=/usr/share/common-licenses/GPL-3
n_predict=32

[[ -f $build/CMakeCache.txt && -f $build/src/libllama.a ]] || {
    echo "make-gemma-reference: $build is not configured and built; run tools/bench-vs-llamacpp.sh first" >&2
    exit 1
}
[[ -f $model ]] || tools/fetch-model.sh gemma3 >/dev/null

if [[ ! -x $build/bin/llama-perplexity ]]; then
    echo "== building llama-perplexity =="
    cmake --build "$build" --target llama-perplexity -j "$(nproc)" >/dev/null
fi

mkdir -p "$work" "$(dirname "$greedy_fixture")"
driver=$work/llama_reference
src=tools/reference/llama_reference.cpp
if [[ ! -x $driver || $src -nt $driver || $build/src/libllama.a -nt $driver ]]; then
    echo "== building $driver =="
    g++ -O2 -std=c++17 -I"$llama/include" -I"$llama/ggml/include" "$src" -o "$driver.partial" \
        "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
        "$build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl
    mv "$driver.partial" "$driver"
fi

for ctx in 256 512 1024; do
    log="$work/perplexity-c$ctx.log"
    if ! grep -q 'Final estimate' "$log" 2>/dev/null; then
        echo "== llama-perplexity c=$ctx =="
        "$build/bin/llama-perplexity" -m "$model" -f "$text" -c "$ctx" -b "$ctx" -t "$threads" \
            >"$log.partial" 2>&1
        mv "$log.partial" "$log"
    fi
done

# The sdist carries no git history, so its build-info may say "unknown".
commit=$(grep -o 'LLAMA_COMMIT = "[^"]*"' "$build/common/build-info.cpp" | cut -d'"' -f2 || true)
[[ -n $commit ]] || commit=unknown
echo "== greedy and tokenization (driver) =="
python3 - "$driver" "$model" "$work" "$greedy_fixture" "$ppl_fixture" "$n_predict" "$threads" "$commit" <<'EOF'
import hashlib, json, os, re, subprocess, sys

driver, model, work, greedy_fixture, ppl_fixture, n_predict, threads, commit = sys.argv[1:]

def run(args, text):
    path = os.path.join(work, "input.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    out = subprocess.run([driver, args[0], model, path, *args[1:]], check=True,
                         capture_output=True, text=True).stdout
    return out.splitlines()

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

tokenize_cases = [
    ("Hello world", True),
    ("The capital of France is", True),
    ("  two leading spaces, trailing  ", True),
    ("multiple     spaces\tand\ttabs", True),
    ("digits 1234567890 and 3.14159, 2024-01-01", True),
    ("naïve café déjà vu — “quotes” 日本語のテキスト 😀🚀 Привет мир", True),
    ("line one\nline two\n\nline four\r\n", True),
    ("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", True),
    ("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", False),
    ("<bos>text with <eos> and <pad> inside", True),
    ("fn main() {\n    println!(\"hi\");\n}\n", True),
    ("", True),
    (" ", True),
    ("\n\n\n", True),
    ("don't stop; I'll go—won't you? (yes!)", True),
    ("\u00a0non-breaking\u2009thin\u3000ideographic", True),
]
tok = []
for text, parse_special in tokenize_cases:
    line = run(["tokenize", "1" if parse_special else "0"], text)[0].split()
    assert line[0] == "ids"
    tok.append({"text": text, "parse_special": parse_special, "add_special": True,
                "ids": [int(x) for x in line[1:]]})

prompts = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "<start_of_turn>user\nWhat is the capital of France? Answer in one sentence.<end_of_turn>\n<start_of_turn>model\n",
    "def fibonacci(n):\n    ",
]
greedy = []
for p in prompts:
    entry = {"prompt": p, "generated_ids": [], "top1_logits": [],
             "top1_minus_top2_logit_margin": []}
    text = b""
    for line in run(["greedy", n_predict, threads], p):
        f = line.split(" ")
        if f[0] == "prompt_ids":
            entry["prompt_ids"] = [int(x) for x in f[1:]]
        elif f[0] == "top10":
            v = f[1:]
            entry["step0_top10_id_logit"] = [[int(v[i]), float(v[i + 1])] for i in range(0, 20, 2)]
        elif f[0] == "step":
            entry["generated_ids"].append(int(f[2]))
            entry["top1_logits"].append(float(f[3]))
            entry["top1_minus_top2_logit_margin"].append(float(f[4]))
            text += bytes.fromhex(f[5]) if len(f) > 5 else b""
    entry["generated_text"] = text.decode("utf-8", errors="replace")
    greedy.append(entry)

size = os.path.getsize(model)
digest = sha256(model)
ref = (f"llama.cpp {commit} as vendored by llama-cpp-python, x86_64 build with GGML_NATIVE=OFF, "
       "AVX2/FMA/F16C (plus this CPU's AVX-512 extensions), AMX off")
model_desc = f"models/gguf/gemma-3-270m-q4_k_m.gguf ({size} bytes, sha256 {digest})"
doc = {
    "meta": {
        "reference": ref,
        "made_by": "tools/make-gemma-reference.sh (driver tools/reference/llama_reference.cpp)",
        "model": model_desc,
        "driver": "llama_tokenize add_special=true parse_special=true; whole prompt decoded as ONE "
                  "batch (n_batch=n_ubatch=n_prompt); then one token per llama_decode; next token = "
                  "argmax over raw logits (first max index on ties); no chat template applied (the "
                  "chat prompt is written in Gemma's turn format, its special tokens parsed); "
                  f"n_ctx = n_prompt+n_predict+8; KV cache f16; flash-attn off; n_threads={threads}",
        "n_predict": int(n_predict),
        "stop": "stops early only on an end-of-generation token (llama_vocab_is_eog: <eos>, "
                "<end_of_turn>, ...), which is included in generated_ids",
        "fields": "prompt_ids, generated_ids, generated_text (pieces concatenated, special tokens "
                  "rendered), top1_logits and top1_minus_top2_logit_margin per step, "
                  "step0_top10_id_logit; tokenize_gemma3: text, parse_special, add_special, ids",
    },
    "Q4_K_M": greedy,
    "tokenize_gemma3": tok,
}
with open(greedy_fixture, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {greedy_fixture}")

ppl = {"reference": ref, "made_by": "tools/make-gemma-reference.sh", "model": model_desc,
       "perplexity_method": f"llama-perplexity -f /usr/share/common-licenses/GPL-3 -c C -b C -t {threads}: "
                            "non-overlapping chunks of C tokens, second half of each scored",
       "file_bytes": size, "sha256": digest}
for ctx in (256, 512, 1024):
    log = open(os.path.join(work, f"perplexity-c{ctx}.log")).read()
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
    ppl[f"ppl_c{ctx}"] = float(m.group(1))
    ppl[f"ppl_c{ctx}_pm"] = float(m.group(2))
    ppl[f"chunks_c{ctx}"] = int(chunks.group(1))
with open(ppl_fixture, "w") as f:
    json.dump(ppl, f, indent=1)
    f.write("\n")
print(f"wrote {ppl_fixture}")
EOF
