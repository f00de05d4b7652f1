// llama_reference: records llama.cpp's tokenization and greedy generation for a model, in a
// line format tools/make-gemma-reference.sh turns into a JSON fixture.
//
//   llama_reference tokenize MODEL TEXT_FILE PARSE_SPECIAL(0|1)
//       ids <id>...                         (add_special = true)
//   llama_reference greedy MODEL PROMPT_FILE N_PREDICT THREADS
//       prompt_ids <id>...
//       top10 <id> <logit> ...              (step 0, raw logits)
//       step <i> <id> <top1 logit> <top1 - top2 margin> <piece as hex>
//
// Greedy is done as the shared SmolLM2 references were: llama_tokenize(add_special = true,
// parse_special = true); the whole prompt decoded as ONE batch (n_batch = n_ubatch =
// n_prompt); then one token per llama_decode; next token = argmax of the raw logits (first max
// index on ties); stop at an end-of-generation token (included). n_ctx = n_prompt + n_predict
// + 8, f16 KV cache, flash attention off.
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <algorithm>

static std::string read_file(const char * path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool parse_special) {
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, parse_special);
    std::vector<llama_token> ids(n);
    if (llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), n, true, parse_special) != n) {
        fprintf(stderr, "tokenize failed\n");
        exit(1);
    }
    return ids;
}

static void quiet(ggml_log_level, const char *, void *) {}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s tokenize MODEL FILE PARSE_SPECIAL | greedy MODEL FILE N_PREDICT THREADS\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    const std::string mode = argv[1];
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[2]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const std::string text = read_file(argv[3]);

    if (mode == "tokenize") {
        auto ids = tokenize(vocab, text, atoi(argv[4]) != 0);
        printf("ids");
        for (auto id : ids) printf(" %d", id);
        printf("\n");
        llama_model_free(model);
        return 0;
    }
    if (mode != "greedy" || argc < 6) {
        fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 2;
    }
    const int n_predict = atoi(argv[4]);
    const int n_threads = atoi(argv[5]);
    auto prompt = tokenize(vocab, text, true);
    const int n_prompt = (int) prompt.size();

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_predict + 8;
    cp.n_batch = n_prompt;
    cp.n_ubatch = n_prompt;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F16;
    cp.type_v = GGML_TYPE_F16;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create context\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(vocab);

    printf("prompt_ids");
    for (auto id : prompt) printf(" %d", id);
    printf("\n");

    llama_batch batch = llama_batch_get_one(prompt.data(), n_prompt);
    llama_token next = 0;
    for (int step = 0; step < n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "decode failed at step %d\n", step);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int i = 1; i < n_vocab; i++) {
            if (logits[i] > logits[best]) best = i;
        }
        float second = -INFINITY;
        for (int i = 0; i < n_vocab; i++) {
            if (i != best && logits[i] > second) second = logits[i];
        }
        if (step == 0) {
            std::vector<int> order(n_vocab);
            for (int i = 0; i < n_vocab; i++) order[i] = i;
            std::partial_sort(order.begin(), order.begin() + 10, order.end(),
                              [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
            printf("top10");
            for (int i = 0; i < 10; i++) printf(" %d %.6f", order[i], logits[order[i]]);
            printf("\n");
        }
        char piece[256];
        int n = llama_token_to_piece(vocab, best, piece, sizeof(piece), 0, true);
        printf("step %d %d %.6f %.6f ", step, best, logits[best], logits[best] - second);
        for (int i = 0; i < std::max(n, 0); i++) printf("%02x", (unsigned char) piece[i]);
        printf("\n");
        fflush(stdout);
        if (llama_vocab_is_eog(vocab, best)) break;
        next = best;
        batch = llama_batch_get_one(&next, 1);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
