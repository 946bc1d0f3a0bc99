/* providers/llm/llm.h — talking to language models.
 *
 * DESIGN
 * One client (struct llm) per thread, with a backend that knows one wire
 * format: Google Gemini generateContent (gemini.c) or OpenAI-compatible chat
 * completions (openai.c: OpenAI, Ollama, llama.cpp server, vLLM).  `offline`
 * has no backend: llm_new() answers ERR_UNSUPPORTED and callers plan offline.
 *
 * The client owns everything between "here is a prompt" and "here is the
 * text and what it cost": one reused HTTP handle (engine/http.h: keep-alive, TLS
 * verification on), a deadline per call, retries with exponential backoff and
 * jitter on 429, 5xx and network errors honouring Retry-After, and a circuit
 * breaker that, after `breaker_threshold` calls in a row failed, refuses at
 * once for `breaker_cooldown_ms` so the bot falls back to offline instead of
 * making every user wait for a dead server.  Servers that reject structured
 * output (a JSON schema) are asked again with JSON mode, then with none; the
 * answer is never trusted either way — callers parse and validate it.
 *
 * Nothing here stores anything: token usage is handed back in llm_resp and the
 * caller records it.  The API key goes only into a request header. */
#ifndef SKYNET_LLM_H
#define SKYNET_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/config.h"
#include "engine/err.h"

struct llm_msg {
  const char *role;            /* "user" or "assistant" */
  const char *text;
};

struct llm_req {
  const char *system;          /* the system instruction */
  const struct llm_msg *msgs;  /* the conversation, oldest first */
  size_t n_msgs;
  /* Structured output: a JSON Schema (OpenAI) and the same in Gemini's
   * OpenAPI subset.  Both NULL → free text. */
  const char *schema_name;
  const char *schema_json;
  const char *schema_gemini;
  int max_tokens;              /* 0 → 1024 */
  double temperature;
};

struct llm_resp {
  char *text;                  /* malloc'd; NULL when the model gave none */
  int64_t prompt_tokens;       /* from the answer's usage fields */
  int64_t completion_tokens;
  char finish[32];             /* STOP, MAX_TOKENS, length, SAFETY, ... */
  int truncated;               /* the output hit the token limit */
  int refused;                 /* blocked or refused; why in detail */
  char detail[256];
  size_t request_bytes;        /* body size of the last request sent */
  int attempts;                /* HTTP requests this call made */
};

struct llm;

/* What one backend knows of its wire format. */
struct llm_backend {
  const char *name;
  const char *default_model;
  /* Builds the request.  json_level: 2 schema, 1 JSON mode, 0 plain. */
  enum err (*build)(const struct llm *c, const struct llm_req *r, int json_level,
                    struct buf *url, struct buf *body);
  /* Adds the authentication header, if any. */
  enum err (*auth_header)(const struct llm *c, struct buf *hdr);
  /* Parses a 200 answer. */
  enum err (*parse)(const char *body, struct llm_resp *out, char *why, size_t n);
  /* From an error answer: its message and a retry delay it names (ms, 0 none). */
  void (*parse_error)(const char *body, char *msg, size_t n, int64_t *retry_ms);
  /* 1 when a 400 answer means "structured output not supported". */
  int (*rejects_schema)(const char *body);
};

extern const struct llm_backend llm_gemini;
extern const struct llm_backend llm_openai;

/* Tunables, with defaults from llm_opts_default(). */
struct llm_opts {
  int timeout_ms;              /* one HTTP request */
  int deadline_ms;             /* a whole call, retries included */
  int max_attempts;
  int backoff_ms;              /* first retry delay, doubled each time */
  int max_retry_after_ms;      /* a longer Retry-After fails the call */
  int breaker_threshold;
  int breaker_cooldown_ms;
};
void llm_opts_default(struct llm_opts *o);

/* A client for cfg's llm.provider.  ERR_UNSUPPORTED for "offline";
 * ERR_CONFIG with why when the backend lacks what it needs. */
enum err llm_new(const struct cfg *cfg, const struct llm_opts *opts, struct llm **out,
                 char *why, size_t n);
void llm_free(struct llm *c);

const char *llm_name(const struct llm *c);    /* "gemini" */
const char *llm_model(const struct llm *c);
const char *llm_base(const struct llm *c);
const char *llm_key(const struct llm *c);      /* NULL when none */

/* Sends the request, with retries.  On success resp holds the answer (even a
 * refusal or a truncated one: look at its flags).  Errors: ERR_UNAVAILABLE
 * (server errors, circuit open), ERR_TIMEOUT, ERR_NET, ERR_DENIED (401/403),
 * ERR_INVAL (400), ERR_PARSE (an answer that is not the documented JSON),
 * each with a sentence in why that carries no secret. */
enum err llm_call(struct llm *c, const struct llm_req *r, struct llm_resp *resp,
                  char *why, size_t n);
void llm_resp_release(struct llm_resp *r);

/* 1 while the breaker refuses calls; *retry_in_ms until it lets one through. */
int llm_breaker_open(const struct llm *c, int64_t *retry_in_ms);

/* A rough token estimate for text we have not sent yet (about 4 bytes each). */
int64_t llm_estimate_tokens(const char *s);

#endif
