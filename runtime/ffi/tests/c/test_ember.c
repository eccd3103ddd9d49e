/*
 * The C ABI from C: every function, the error paths, an early stop, a cancel from another
 * thread, and several sessions on one model on several threads.
 *
 *   test_ember MODEL.gguf PROMPT [HOSTILE.gguf]
 *
 * HOSTILE.gguf, when given, is a model whose chat template nests 30,000 levels deep: on a
 * thread with a 256 KiB stack, making a session over it must fail with a status, not crash.
 *
 * Prints "TEXT:<greedy text>" (24 tokens of PROMPT, default parameters; 4 with
 * EMBER_C_TEST_QUICK set: 3) for the harness to compare with the Rust engine, and exits non-zero if
 * any check fails.
 */
#define _POSIX_C_SOURCE 200809L
#include "ember.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int checks = 0, failures = 0;
/* Tokens per generation: 24, or 3 when EMBER_C_TEST_QUICK is set (under valgrind). */
static unsigned n_tok = 24;

/* Waits politely (valgrind runs one thread at a time: a busy loop would starve the other). */
static void wait_for(atomic_int *flag) {
  while (!atomic_load(flag)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    checks++;                                                              \
    if (!(cond)) {                                                         \
      failures++;                                                          \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                        \
      fprintf(stderr, " (last error: %s)\n", ember_last_error());          \
    }                                                                      \
  } while (0)

typedef struct {
  char text[16384];
  size_t len;
  int pieces;
  int stop_after;          /* return 1 after this many pieces (0: never) */
  atomic_int *first_piece; /* set on the first piece (may be NULL) */
  atomic_int *go_on;       /* wait for this before returning from the first piece */
} sink;

static int collect(const char *piece, size_t len, void *user) {
  sink *s = user;
  CHECK(piece[len] == '\0' && strlen(piece) == len, "piece not NUL-terminated");
  if (s->len + len < sizeof s->text) {
    memcpy(s->text + s->len, piece, len);
    s->len += len;
    s->text[s->len] = '\0';
  }
  s->pieces++;
  if (s->pieces == 1 && s->first_piece) {
    atomic_store(s->first_piece, 1);
    if (s->go_on) wait_for(s->go_on);
  }
  return s->stop_after && s->pieces >= s->stop_after;
}

static void sink_init(sink *s) { memset(s, 0, sizeof *s); }

/* ---- several sessions on one model, on several threads ---- */
typedef struct {
  const ember_model *m;
  const char *prompt;
  sink out;
  ember_status st;
} job;

static void *generate_job(void *arg) {
  job *j = arg;
  ember_params p = ember_params_default();
  p.n_threads = 1;
  p.n_ctx = 256;
  ember_session *s = NULL;
  j->st = ember_session_new(j->m, &p, &s);
  if (j->st == EMBER_OK) j->st = ember_generate(s, j->prompt, n_tok, collect, &j->out);
  ember_session_free(s);
  return NULL;
}

/* ---- cancel from another thread ---- */
typedef struct {
  ember_session *s;
  atomic_int first_piece, cancelled;
} cancel_ctx;

static void *canceller(void *arg) {
  cancel_ctx *c = arg;
  wait_for(&c->first_piece);
  ember_session_cancel(c->s);
  atomic_store(&c->cancelled, 1);
  return NULL;
}

/* ---- cancel while the prompt is evaluated ---- */
typedef struct {
  ember_session *s;
} prompt_cancel_ctx;

static void *cancel_after_a_while(void *arg) {
  prompt_cancel_ctx *c = arg;
  struct timespec ts = {0, 300000000};
  nanosleep(&ts, NULL);
  ember_session_cancel(c->s);
  return NULL;
}

/* ---- a session and a chat turn on a thread with a small stack ---- */
typedef struct {
  ember_model *m;
  sink out;
  ember_status st;
  char error[512];
} small_stack_ctx;

static void *chat_on_small_stack(void *arg) {
  small_stack_ctx *c = arg;
  ember_params p = ember_params_default();
  p.n_ctx = 512;
  ember_session *s = NULL;
  c->st = ember_session_new(c->m, &p, &s);
  if (c->st == EMBER_OK) c->st = ember_chat(s, "What is the capital of France?", n_tok, collect, &c->out);
  snprintf(c->error, sizeof c->error, "%s", ember_last_error());
  ember_session_free(s);
  return NULL;
}

/* ---- the last error is per thread ---- */
static void *fail_in_thread(void *arg) {
  (void)arg;
  ember_model *m = NULL;
  ember_status st = ember_model_open("/nonexistent/thread.gguf", &m);
  CHECK(st == EMBER_ERR_IO, "status %d", st);
  CHECK(strstr(ember_last_error(), "thread.gguf") != NULL, "message: %s", ember_last_error());
  return NULL;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s MODEL.gguf PROMPT [HOSTILE.gguf]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1], *prompt = argv[2];
  const char *hostile = argc == 4 ? argv[3] : NULL;
  if (getenv("EMBER_C_TEST_QUICK")) n_tok = 3;
  /* EMBER_C_TEST_SAMPLED (under valgrind, ~450x slower): the grammar-constrained replies, the
   * small-stack thread and the concurrent sessions are left out (they run natively and under the
   * sanitizers); every other call stays. */
  int sampled = getenv("EMBER_C_TEST_SAMPLED") != NULL;

  /* version, defaults */
  CHECK(ember_version() && strlen(ember_version()) > 0, "version");
  ember_params d = ember_params_default();
  CHECK(d.n_ctx == 2048 && d.temperature == 0.0f && d.top_k == 40 && d.n_sinks == 4 &&
            d.kv_type == EMBER_KV_F16,
        "defaults");

  /* NULL everywhere */
  ember_model *m = (ember_model *)1;
  CHECK(ember_model_open(NULL, &m) == EMBER_ERR_INVALID_ARGUMENT && m == NULL, "NULL path");
  CHECK(strlen(ember_last_error()) > 0, "a message");
  CHECK(ember_model_open(path, NULL) == EMBER_ERR_INVALID_ARGUMENT, "NULL out");
  CHECK(ember_model_open_memory(NULL, 10, &m) == EMBER_ERR_INVALID_ARGUMENT && m == NULL,
        "NULL data");
  ember_session *s = (ember_session *)1;
  CHECK(ember_session_new(NULL, NULL, &s) == EMBER_ERR_INVALID_ARGUMENT && s == NULL, "NULL model");
  size_t n = 0;
  int32_t ids[64];
  CHECK(ember_tokenize(NULL, "x", ids, 64, &n) == EMBER_ERR_INVALID_ARGUMENT, "NULL model");
  CHECK(ember_generate(NULL, "x", 4, NULL, NULL) == EMBER_ERR_INVALID_ARGUMENT, "NULL session");
  CHECK(ember_chat(NULL, "x", 4, NULL, NULL) == EMBER_ERR_INVALID_ARGUMENT, "NULL session");
  ember_model_free(NULL);
  ember_session_free(NULL);
  ember_session_reset(NULL);
  ember_session_cancel(NULL);

  /* bad files and buffers */
  m = (ember_model *)1;
  CHECK(ember_model_open("/nonexistent/model.gguf", &m) == EMBER_ERR_IO && m == NULL, "missing");
  char tmp[] = "/tmp/ember-c-test-XXXXXX";
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  if (f) {
    fputs("definitely not a model", f);
    fclose(f);
  }
  CHECK(ember_model_open(tmp, &m) == EMBER_ERR_FORMAT && m == NULL, "not GGUF");
  remove(tmp);
  const char garbage[] = "GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff";
  CHECK(ember_model_open_memory(garbage, sizeof garbage, &m) != EMBER_OK && m == NULL, "garbage");
  size_t len = 0;
  unsigned char *bytes = read_file(path, &len);
  CHECK(bytes != NULL, "reading %s", path);
  if (!bytes) return 1;
  CHECK(ember_model_open_memory(bytes, 4096, &m) == EMBER_ERR_FORMAT && m == NULL, "truncated");

  /* the model, from the file and from memory */
  CHECK(ember_model_open(path, &m) == EMBER_OK && m != NULL, "open");
  ember_model *mm = NULL;
  CHECK(ember_model_open_memory(bytes, len, &mm) == EMBER_OK && mm != NULL, "open_memory");
  /* a buffer at an address that is not EMBER_DATA_ALIGN-aligned: a status and a message */
  unsigned char *shifted = malloc(len + 16);
  CHECK(shifted != NULL, "malloc");
  if (shifted) {
    memcpy(shifted + 1, bytes, len);
    ember_model *odd = (ember_model *)1;
    CHECK(ember_model_open_memory(shifted + 1, len, &odd) == EMBER_ERR_INVALID_ARGUMENT && odd == NULL,
          "odd address");
    CHECK(strstr(ember_last_error(), "aligned") != NULL, "message: %s", ember_last_error());
    memmove(shifted + EMBER_DATA_ALIGN, shifted + 1, len);
    CHECK(ember_model_open_memory(shifted + EMBER_DATA_ALIGN, len, &odd) == EMBER_OK, "aligned copy");
    ember_model_free(odd);
    free(shifted);
  }

  /* tokenize */
  CHECK(ember_tokenize(m, "Hello world", ids, 64, &n) == EMBER_OK && n == 2 && ids[0] == 19556 &&
            ids[1] == 905,
        "Hello world: %zu tokens", n);
  int32_t ids2[64];
  size_t n2 = 0;
  CHECK(ember_tokenize(mm, "Hello world", ids2, 64, &n2) == EMBER_OK && n2 == n &&
            memcmp(ids, ids2, n * sizeof *ids) == 0,
        "same tokens from memory");
  CHECK(ember_tokenize(m, prompt, ids, 1, &n) == EMBER_ERR_CAPACITY && n > 1, "capacity: %zu", n);
  size_t need = 0;
  CHECK(ember_tokenize(m, prompt, NULL, 0, &need) == EMBER_ERR_CAPACITY && need == n, "count");
  CHECK(ember_tokenize(m, "\xff\xfe", ids, 64, &n) == EMBER_ERR_INVALID_ARGUMENT, "bad UTF-8");
  CHECK(ember_tokenize(m, NULL, ids, 64, &n) == EMBER_ERR_INVALID_ARGUMENT, "NULL text");
  CHECK(ember_tokenize(m, "x", NULL, 4, &n) == EMBER_ERR_INVALID_ARGUMENT, "NULL ids, cap 4");
  CHECK(ember_tokenize(m, "x", ids, 4, NULL) == EMBER_ERR_INVALID_ARGUMENT, "NULL n_out");

  /* absurd parameters */
  ember_params p = ember_params_default();
  p.n_ctx = 0;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT && s == NULL, "n_ctx 0");
  p.n_ctx = 1u << 30;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "n_ctx huge");
  p = ember_params_default();
  p.n_sinks = p.n_ctx;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "sinks");
  p = ember_params_default();
  p.temperature = NAN;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "NaN temperature");
  p = ember_params_default();
  p.temperature = -1.0f;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "negative temperature");
  p = ember_params_default();
  p.top_p = 0.0f;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "top_p 0");
  p = ember_params_default();
  p.n_threads = 100000;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "threads");
  p = ember_params_default();
  p.kv_type = 7;
  CHECK(ember_session_new(m, &p, &s) == EMBER_ERR_INVALID_ARGUMENT, "kv type");

  /* greedy generation (the harness compares this text with the engine's) */
  p = ember_params_default();
  p.n_ctx = 512;
  CHECK(ember_session_new(m, &p, &s) == EMBER_OK && s != NULL, "session");
  CHECK(ember_generate(s, NULL, 4, NULL, NULL) == EMBER_ERR_INVALID_ARGUMENT, "NULL prompt");
  CHECK(ember_generate(s, "\xc3\x28", 4, NULL, NULL) == EMBER_ERR_INVALID_ARGUMENT, "bad UTF-8");
  sink out;
  sink_init(&out);
  CHECK(ember_generate(s, prompt, n_tok, collect, &out) == EMBER_OK && out.len > 0, "generate");
  printf("TEXT:%s\n", out.text);

  /* reset gives the same text again; a session over the in-memory model too */
  ember_session_reset(s);
  sink again;
  sink_init(&again);
  CHECK(ember_generate(s, prompt, n_tok, collect, &again) == EMBER_OK && strcmp(out.text, again.text) == 0,
        "after reset: %s", again.text);
  ember_session *sm = NULL;
  CHECK(ember_session_new(mm, &p, &sm) == EMBER_OK, "session on the in-memory model");
  sink mem;
  sink_init(&mem);
  CHECK(ember_generate(sm, prompt, n_tok, collect, &mem) == EMBER_OK && strcmp(out.text, mem.text) == 0,
        "in-memory model: %s", mem.text);
  ember_session_free(sm);

  /* an early stop by the callback: no further call */
  ember_session_reset(s);
  sink early;
  sink_init(&early);
  early.stop_after = 2;
  ember_status st = ember_generate(s, prompt, n_tok, collect, &early);
  CHECK(st == EMBER_OK && early.pieces == 2, "early stop: status %d, %d pieces", st, early.pieces);

  /* chat: two turns keep the conversation */
  ember_session_reset(s);
  sink c1, c2;
  sink_init(&c1);
  sink_init(&c2);
  CHECK(ember_chat(s, "What is the capital of France?", n_tok, collect, &c1) == EMBER_OK && c1.len > 0,
        "chat 1");
  CHECK(ember_chat(s, "And of Italy?", n_tok, collect, &c2) == EMBER_OK && c2.len > 0, "chat 2");
  CHECK(ember_chat(s, NULL, 16, collect, &c2) == EMBER_ERR_INVALID_ARGUMENT, "NULL message");

  /* a grammar: the reply is one of its sentences; a broken one is refused with where; NULL clears */
  CHECK(ember_session_set_grammar(NULL, "root ::= \"x\"") == EMBER_ERR_INVALID_ARGUMENT, "NULL session");
  CHECK(ember_session_set_grammar(s, "root ::= [a-z") == EMBER_ERR_INVALID_ARGUMENT &&
            strstr(ember_last_error(), "line 1") != NULL,
        "broken grammar: %s", ember_last_error());
  CHECK(ember_session_set_grammar(s, "root ::= \"yes\" | \"no\"") == EMBER_OK, "grammar");
  ember_session_reset(s);
  sink yn;
  sink_init(&yn);
  CHECK(sampled || (ember_chat(s, "Is the sky blue? Answer yes or no.", 8, collect, &yn) == EMBER_OK &&
                    (strcmp(yn.text, "yes") == 0 || strcmp(yn.text, "no") == 0)),
        "grammar reply: %s", yn.text);
  CHECK(ember_session_set_grammar(s, ember_grammar_json()) == EMBER_OK, "JSON grammar");
  CHECK(ember_session_set_grammar(s, NULL) == EMBER_OK, "no grammar");
  /* a JSON Schema: the reply is an object with the required member */
  CHECK(ember_session_set_json_schema(s, "{\"type\": \"string\", \"pattern\": \"^a$\"}") ==
                EMBER_ERR_INVALID_ARGUMENT &&
            strstr(ember_last_error(), "pattern") != NULL,
        "refused schema: %s", ember_last_error());
  CHECK(ember_session_set_json_schema(s, "{not json") == EMBER_ERR_INVALID_ARGUMENT, "schema not JSON");
  CHECK(ember_session_set_json_schema(
            s, "{\"type\": \"object\", \"properties\": {\"answer\": {\"enum\": [\"yes\", \"no\"]}},"
               " \"required\": [\"answer\"]}") == EMBER_OK,
        "schema: %s", ember_last_error());
  ember_session_reset(s);
  sink js;
  sink_init(&js);
  CHECK(sampled || (ember_chat(s, "Is the sky blue? Reply in JSON.", 24, collect, &js) == EMBER_OK &&
                    strstr(js.text, "\"answer\"") != NULL &&
                    (strstr(js.text, "\"yes\"") != NULL || strstr(js.text, "\"no\"") != NULL) &&
                    js.text[0] == '{'),
        "schema reply: %s", js.text);
  CHECK(ember_session_set_json_schema(s, NULL) == EMBER_OK, "no schema");

  /* cancel from another thread while generating */
  ember_session_reset(s);
  cancel_ctx cc = {.s = s};
  atomic_init(&cc.first_piece, 0);
  atomic_init(&cc.cancelled, 0);
  sink cs;
  sink_init(&cs);
  cs.first_piece = &cc.first_piece;
  cs.go_on = &cc.cancelled;
  pthread_t t;
  pthread_create(&t, NULL, canceller, &cc);
  st = ember_generate(s, "Once upon a time", 400, collect, &cs);
  pthread_join(t, NULL);
  CHECK(st == EMBER_ERR_CANCELLED && cs.pieces <= 2, "cancel: status %d after %d pieces", st, cs.pieces);
  /* and the session works afterwards */
  ember_session_reset(s);
  sink after;
  sink_init(&after);
  CHECK(ember_generate(s, prompt, n_tok, collect, &after) == EMBER_OK && strcmp(out.text, after.text) == 0,
        "after cancel");

  /* cancel while a long prompt is evaluated: it stops between layers, the session goes on */
  {
    size_t big_len = n_tok < 24 ? 4000 : 40000; /* shorter under valgrind */
    char *big = malloc(big_len + 1);
    CHECK(big != NULL, "malloc");
    for (size_t i = 0; i < big_len; i++) big[i] = "the quick brown fox jumps "[i % 26];
    big[big_len] = '\0';
    ember_session_reset(s);
    prompt_cancel_ctx pc = {.s = s};
    pthread_create(&t, NULL, cancel_after_a_while, &pc);
    sink none;
    sink_init(&none);
    st = ember_chat(s, big, 8, collect, &none);
    pthread_join(t, NULL);
    CHECK(st == EMBER_ERR_CANCELLED && none.pieces == 0, "prompt cancel: status %d, %d pieces", st,
          none.pieces);
    /* the cancelled message was dropped: the next turn answers as a new conversation does */
    sink again1;
    sink_init(&again1);
    CHECK(ember_chat(s, "What is the capital of France?", n_tok, collect, &again1) == EMBER_OK &&
              strcmp(again1.text, c1.text) == 0,
          "chat after a prompt cancel: %s", again1.text);
    free(big);
  }
  ember_session_free(s);

  /* every call on a host thread with a 256 KiB stack */
  if (!sampled) {
    small_stack_ctx sc = {.m = m};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_create(&t, &attr, chat_on_small_stack, &sc);
    pthread_join(t, NULL);
    CHECK(sc.st == EMBER_OK && strcmp(sc.out.text, c1.text) == 0, "256 KiB thread: %d %s", sc.st,
          sc.out.text);
    if (hostile) {
      ember_model *hm = NULL;
      CHECK(ember_model_open(hostile, &hm) == EMBER_OK, "hostile model opens");
      small_stack_ctx hc = {.m = hm};
      pthread_create(&t, &attr, chat_on_small_stack, &hc);
      pthread_join(t, NULL);
      CHECK(hc.st == EMBER_ERR_INVALID_ARGUMENT, "hostile template on a 256 KiB thread: %d", hc.st);
      CHECK(strstr(hc.error, "chat template") != NULL, "message: %s", hc.error);
      ember_model_free(hm);
    }
    pthread_attr_destroy(&attr);
  }

  /* four sessions on one model, four threads (two when quick) */
  int n_jobs = sampled ? 0 : n_tok < 24 ? 2 : 4;
  job jobs[4];
  pthread_t th[4];
  for (int i = 0; i < n_jobs; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].m = m;
    jobs[i].prompt = prompt;
    pthread_create(&th[i], NULL, generate_job, &jobs[i]);
  }
  for (int i = 0; i < n_jobs; i++) {
    pthread_join(th[i], NULL);
    CHECK(jobs[i].st == EMBER_OK && strcmp(jobs[i].out.text, out.text) == 0, "thread %d: %s", i,
          jobs[i].out.text);
  }

  /* an allocation the system refuses is a status, not an abort: in a child process whose
   * address space is capped just above what it uses, a session with a large f32 cache (about
   * 400 MB) must fail with EMBER_ERR_CAPACITY (only when the harness asks: sanitizers and
   * valgrind reserve address space of their own) */
  if (getenv("EMBER_C_TEST_RLIMIT")) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      long pages = 0;
      FILE *f = fopen("/proc/self/statm", "r");
      if (!f || fscanf(f, "%ld", &pages) != 1) _exit(3);
      fclose(f);
      struct rlimit lim;
      lim.rlim_cur = lim.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (64u << 20);
      if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(4);
      ember_params big = ember_params_default();
      big.n_ctx = 8192;
      big.kv_type = EMBER_KV_F32;
      big.n_threads = 1;
      ember_session *bs = NULL;
      ember_status bst = ember_session_new(m, &big, &bs);
      _exit(bst == EMBER_ERR_CAPACITY && bs == NULL && strstr(ember_last_error(), "out of memory") ? 0 : 5);
    }
    int wst = 0;
    CHECK(pid > 0 && waitpid(pid, &wst, 0) == pid, "fork");
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "allocation failure under a memory limit: %s %d",
          WIFEXITED(wst) ? "exit" : "signal", WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst));
  }

  /* the last error is per thread */
  ember_model *none = NULL;
  ember_model_open("/nonexistent/main.gguf", &none);
  pthread_create(&t, NULL, fail_in_thread, NULL);
  pthread_join(t, NULL);
  CHECK(strstr(ember_last_error(), "main.gguf") != NULL, "main's message kept: %s", ember_last_error());

  ember_model_free(mm);
  ember_model_free(m);
  free(bytes);
  fprintf(stderr, "C ABI: %d checks, %d failed\n", checks, failures);
  return failures != 0;
}
