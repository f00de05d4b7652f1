// llama_tensor_dump: evaluates a prompt (token ids) with llama.cpp as ONE batch and writes every
// contiguous f32/f16 tensor of the graph to DIR/NAME.bin (four little-endian i64 dimensions,
// then the values as f32), under the names llama.cpp's graph gives them (attn_norm-0, Qcur-0,
// kqv_out-0, ...: a name computed twice keeps the last, e.g. Qcur after RoPE). Then prints the
// step-0 top-10 logits. The counterpart of edgellm's `tensor-dump` feature
// (models/src/tensor_dump.rs); tools/reference/compare_dumps.py lines the two up.
//
//   llama_tensor_dump MODEL DIR THREADS ID...      (DIR "-" dumps nothing)
//   env NO_REPACK=1: llama.cpp's repacked weight layouts off (they sum in other orders)
//
// Build against the static libraries of the llama.cpp that tools/bench-vs-llamacpp.sh builds:
//   g++ -O2 -std=c++17 -I$LLAMA/include -I$LLAMA/ggml/include llama_tensor_dump.cpp \
//     $LLAMA/build/src/libllama.a $LLAMA/build/ggml/src/libggml.a \
//     $LLAMA/build/ggml/src/libggml-cpu.a $LLAMA/build/ggml/src/libggml-base.a \
//     -lpthread -lgomp -ldl -lm -o llama_tensor_dump
#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static const char * g_dir = nullptr;

static bool on_tensor(struct ggml_tensor * t, bool ask, void *) {
    if (ask) {
        return g_dir != nullptr;
    }
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) {
        return true;
    }
    if (!ggml_is_contiguous(t)) {
        return true;
    }
    std::string path = std::string(g_dir) + "/" + t->name + ".bin";
    std::replace(path.begin() + strlen(g_dir), path.end(), ' ', '_');
    const size_t n = ggml_nelements(t);
    std::vector<uint8_t> raw(ggml_nbytes(t));
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
    std::vector<float> values(n);
    if (t->type == GGML_TYPE_F32) {
        memcpy(values.data(), raw.data(), n * sizeof(float));
    } else {
        for (size_t i = 0; i < n; i++) {
            values[i] = ggml_fp16_to_fp32(((const ggml_fp16_t *) raw.data())[i]);
        }
    }
    FILE * f = fopen(path.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path.c_str());
        return false;
    }
    const int64_t ne[4] = { t->ne[0], t->ne[1], t->ne[2], t->ne[3] };
    fwrite(ne, sizeof(int64_t), 4, f);
    fwrite(values.data(), sizeof(float), n, f);
    fclose(f);
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL DIR THREADS ID...\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.use_extra_bufts = getenv("NO_REPACK") == nullptr;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    g_dir = strcmp(argv[2], "-") != 0 ? argv[2] : nullptr;
    std::vector<llama_token> ids;
    for (int i = 4; i < argc; i++) {
        ids.push_back(atoi(argv[i]));
    }
    auto cp = llama_context_default_params();
    cp.n_ctx = std::max<uint32_t>(512, ids.size() + 8);
    cp.n_batch = cp.n_ubatch = ids.size();
    cp.n_threads = cp.n_threads_batch = atoi(argv[3]);
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = on_tensor;
    llama_context * ctx = llama_init_from_model(model, cp);
    llama_batch batch = llama_batch_get_one(ids.data(), ids.size());
    if (llama_decode(ctx, batch)) {
        fprintf(stderr, "decode failed\n");
        return 1;
    }
    const float * logits = llama_get_logits_ith(ctx, -1);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::vector<int> order(n_vocab);
    for (int i = 0; i < n_vocab; i++) {
        order[i] = i;
    }
    std::partial_sort(order.begin(), order.begin() + 10, order.end(),
                      [&](int a, int b) { return logits[a] > logits[b]; });
    for (int i = 0; i < 10; i++) {
        printf("%d %.4f\n", order[i], logits[order[i]]);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
