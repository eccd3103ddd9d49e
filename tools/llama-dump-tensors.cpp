// Dumps every f32/f16 tensor llama.cpp computes for a prompt, for `tools/compare-trace.py`:
// one decode of the whole prompt, then greedy single-token steps, each tensor written as
// DIR/<call>-<seq>-<name>-<f32|f16>.bin (raw) plus a .shape file. Prints the chosen token ids.
//
// Build against a llama.cpp build (tools/build-llama-cpp.sh puts one in ~/.cache/ember-llama-cpp-ref):
//   L=~/.cache/ember-llama-cpp-ref/llama.cpp
//   g++ -O2 -std=c++17 -I$L/include -I$L/ggml/include tools/llama-dump-tensors.cpp \
//       -L$L/build/bin -lllama -lggml -lggml-base -Wl,-rpath,$L/build/bin -o llama-dump-tensors
//   ./llama-dump-tensors MODEL PROMPT N_STEPS DIR
// The context is set up as llama-simple sets it (n_ctx = prompt + steps - 1, one batch).
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
static int step = 0, seq = 0; static const char *dir;
static bool cb(struct ggml_tensor *t, bool ask, void *) {
  if (ask) return true;
  if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) return true;
  size_t n = ggml_nbytes(t);
  std::vector<char> buf(n);
  ggml_backend_tensor_get(t, buf.data(), 0, n);
  char path[512];
  snprintf(path, sizeof path, "%s/%d-%03d-%s-%s.bin", dir, step, seq++, t->name, t->type == GGML_TYPE_F16 ? "f16" : "f32");
  for (char *p = path + strlen(dir) + 1; *p; p++) if (*p == ' ' || *p == '(' || *p == ')') *p = '_';
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); return false; }
  fwrite(buf.data(), 1, n, f); fclose(f);
  FILE *m = fopen((std::string(path) + ".shape").c_str(), "w");
  fprintf(m, "%lld %lld %lld %lld %s\n", (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], ggml_op_desc(t)); fclose(m);
  return true;
}
int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s MODEL PROMPT N_STEPS DIR\n", argv[0]);
    return 2;
  }
  const char *model_path = argv[1]; const char *prompt = argv[2]; int n_predict = atoi(argv[3]); dir = argv[4];
  ggml_backend_load_all();
  llama_model_params mp = llama_model_default_params();
  llama_model *model = llama_model_load_from_file(model_path, mp);
  if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
  const llama_vocab *vocab = llama_model_get_vocab(model);
  int n_prompt = -llama_tokenize(vocab, prompt, strlen(prompt), NULL, 0, true, true);
  std::vector<llama_token> toks(n_prompt);
  llama_tokenize(vocab, prompt, strlen(prompt), toks.data(), toks.size(), true, true);
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = n_prompt + n_predict - 1; cp.n_batch = n_prompt; cp.cb_eval = cb; cp.cb_eval_user_data = NULL;
  llama_context *ctx = llama_init_from_model(model, cp);
  llama_batch batch = llama_batch_get_one(toks.data(), toks.size());
  llama_token tok;
  for (int i = 0; i < n_predict; i++) {
    seq = 0;
    llama_decode(ctx, batch);
    const float *lg = llama_get_logits_ith(ctx, -1);
    int nv = llama_vocab_n_tokens(vocab); tok = 0;
    for (int j = 1; j < nv; j++) if (lg[j] > lg[tok]) tok = j;
    printf("%d\n", tok); fflush(stdout);
    if (llama_vocab_is_eog(vocab, tok)) break;
    batch = llama_batch_get_one(&tok, 1);
    step++;
  }
  return 0;
}
