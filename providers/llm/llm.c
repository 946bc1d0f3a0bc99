/* providers/llm/llm.c — the model client: HTTP, retries, circuit breaker. */
#include "llm.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "engine/http.h"
#include "engine/log.h"

#define LLM_RESP_MAX (4 * 1024 * 1024)   /* an answer larger than this is refused */
#define LLM_URL_MAX 4096
#define LLM_BODY_MAX (2 * 1024 * 1024)

struct llm {
  const struct llm_backend *be;
  struct llm_opts opts;
  char *base;
  char *key;
  char *model;
  struct http *h;
  struct http_resp resp;       /* the last answer */
  int64_t retry_after_ms;      /* from the last answer's Retry-After header */
  int json_level;              /* what the server accepts: 2 schema, 1 JSON mode, 0 none */
  int fails;                   /* calls in a row that failed */
  int64_t open_until;          /* breaker refuses until then (monotonic ms) */
  unsigned seed;
};

static int64_t mono_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

  while (ms > 0 && nanosleep(&ts, &ts) != 0)
    ;
}

void llm_opts_default(struct llm_opts *o)
{
  o->timeout_ms = 60000;
  o->deadline_ms = 120000;
  o->max_attempts = 4;
  o->backoff_ms = 500;
  o->max_retry_after_ms = 30000;
  o->breaker_threshold = 3;
  o->breaker_cooldown_ms = 60000;
}

/* Retry-After: seconds, or an HTTP date we do not bother with (→ backoff). */
static void read_retry_after(struct llm *c)
{
  char v[64];

  if (http_resp_header(&c->resp, "Retry-After", v, sizeof v) && isdigit((unsigned char)v[0])) {
    double s = strtod(v, NULL);
    c->retry_after_ms = s > 86400 ? 86400000 : (int64_t)(s * 1000);
  }
}

static char *strip_slash(const char *s)
{
  size_t n = strlen(s);
  char *d;

  while (n && s[n - 1] == '/')
    n--;
  if (!(d = malloc(n + 1)))
    return NULL;
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

enum err llm_new(const struct cfg *cfg, const struct llm_opts *opts, struct llm **out,
                 char *why, size_t n)
{
  const struct llm_backend *be;
  const char *base, *key;
  struct llm *c;

  *out = NULL;
  if (!cfg->llm_provider || strcmp(cfg->llm_provider, "offline") == 0) {
    snprintf(why, n, "llm.provider is offline");
    return ERR_UNSUPPORTED;
  }
  if (strcmp(cfg->llm_provider, "gemini") == 0) {
    be = &llm_gemini;
    base = cfg->gemini_base_url ? cfg->gemini_base_url
                                : "https://generativelanguage.googleapis.com";
    key = cfg->gemini_api_key;
    if (!key) {
      snprintf(why, n, "llm.provider gemini needs llm.gemini_api_key (GEMINI_API_KEY)");
      return ERR_CONFIG;
    }
  } else if (strcmp(cfg->llm_provider, "openai") == 0) {
    be = &llm_openai;
    base = cfg->openai_base_url ? cfg->openai_base_url : "https://api.openai.com/v1";
    key = cfg->openai_api_key;   /* local servers often need none */
  } else {
    snprintf(why, n, "unknown llm.provider '%s'", cfg->llm_provider);
    return ERR_CONFIG;
  }
  if (!(c = calloc(1, sizeof *c)))
    return ERR_NOMEM;
  c->be = be;
  if (opts)
    c->opts = *opts;
  else
    llm_opts_default(&c->opts);
  c->base = strip_slash(base);
  c->key = key ? strdup(key) : NULL;
  c->model = strdup(cfg->llm_model ? cfg->llm_model : be->default_model);
  c->h = http_new();
  c->json_level = 2;
  c->seed = (unsigned)mono_ms() ^ (unsigned)(uintptr_t)c;
  log_add_secret(c->key);   /* a server may echo it in an error */
  if (!c->base || (key && !c->key) || !c->model || !c->h) {
    llm_free(c);
    return ERR_NOMEM;
  }
  *out = c;
  return ERR_OK;
}

void llm_free(struct llm *c)
{
  if (!c)
    return;
  http_free(c->h);
  free(c->base);
  free(c->key);
  free(c->model);
  http_resp_release(&c->resp);
  free(c);
}

const char *llm_name(const struct llm *c) { return c->be->name; }
const char *llm_model(const struct llm *c) { return c->model; }
const char *llm_base(const struct llm *c) { return c->base; }
const char *llm_key(const struct llm *c) { return c->key; }

int llm_breaker_open(const struct llm *c, int64_t *retry_in_ms)
{
  int64_t now = mono_ms();

  if (c->open_until > now) {
    if (retry_in_ms)
      *retry_in_ms = c->open_until - now;
    return 1;
  }
  return 0;
}

int64_t llm_estimate_tokens(const char *s)
{
  return s ? (int64_t)(strlen(s) + 3) / 4 : 0;
}

void llm_resp_release(struct llm_resp *r)
{
  if (!r)
    return;
  free(r->text);
  r->text = NULL;
}

/* ---- one request --------------------------------------------------------- */

struct attempt {
  long status;                 /* 0: no HTTP answer */
};

static enum err perform(struct llm *c, const struct llm_req *r, struct llm_resp *resp,
                        long timeout_ms, struct attempt *a)
{
  struct buf url = BUF_INIT(LLM_URL_MAX), body = BUF_INIT(LLM_BODY_MAX);
  struct buf auth = BUF_INIT(1024);
  const char *hdr[3] = {"Content-Type: application/json", NULL, NULL};
  struct http_req rq = {.timeout_ms = timeout_ms, .max_response = LLM_RESP_MAX};
  enum err e;

  memset(a, 0, sizeof *a);
  http_resp_release(&c->resp);
  c->retry_after_ms = 0;
  if ((e = c->be->build(c, r, c->json_level, &url, &body)) ||
      (e = c->be->auth_header(c, &auth)))
    goto out;
  resp->request_bytes = body.len;
  if (auth.len)
    hdr[1] = buf_str(&auth);
  rq.url = buf_str(&url);
  rq.headers = hdr;
  rq.body = buf_str(&body);
  rq.body_len = body.len;
  e = http_do(c->h, &rq, &c->resp);
  if (e) {
    e = e == ERR_TIMEOUT ? ERR_TIMEOUT : ERR_NET;
    goto out;
  }
  a->status = c->resp.status;
  read_retry_after(c);
out:
  if (auth.data)   /* the key was in here */
    memset(auth.data, 0, auth.cap);
  buf_release(&auth);
  buf_release(&url);
  buf_release(&body);
  return e;
}

static int64_t backoff(struct llm *c, int attempt)
{
  int64_t base = (int64_t)c->opts.backoff_ms << (attempt < 10 ? attempt : 10);
  return base + (int64_t)(rand_r(&c->seed) % (unsigned)(base / 2 + 1));
}

static void failed(struct llm *c)
{
  if (++c->fails >= c->opts.breaker_threshold && c->opts.breaker_threshold > 0) {
    c->open_until = mono_ms() + c->opts.breaker_cooldown_ms;
    log_warn("llm", "%s: %d calls in a row failed; using the offline planner for %d s",
             c->be->name, c->fails, c->opts.breaker_cooldown_ms / 1000);
  }
}

enum err llm_call(struct llm *c, const struct llm_req *r, struct llm_resp *resp,
                  char *why, size_t n)
{
  int64_t start = mono_ms(), wait, left;
  struct attempt a;
  enum err e = ERR_UNAVAILABLE;
  char msg[200];

  memset(resp, 0, sizeof *resp);
  if (llm_breaker_open(c, &wait)) {
    snprintf(why, n, "the %s model is unavailable after %d failed calls; next try in %lld s",
             c->be->name, c->fails, (long long)(wait + 999) / 1000);
    return ERR_UNAVAILABLE;
  }
  for (int i = 0; i < c->opts.max_attempts; i++) {
    left = c->opts.deadline_ms - (mono_ms() - start);
    if (left <= 0) {
      e = ERR_TIMEOUT;
      snprintf(why, n, "the %s model did not answer within %d s", c->be->name,
               c->opts.deadline_ms / 1000);
      break;
    }
    resp->attempts++;
    e = perform(c, r, resp, left < c->opts.timeout_ms ? left : c->opts.timeout_ms, &a);
    wait = backoff(c, i);
    if (e == ERR_TIMEOUT || e == ERR_NET) {
      snprintf(why, n, "the %s model %s", c->be->name,
               e == ERR_TIMEOUT ? "timed out" : "could not be reached");
      log_warn("llm", "%s: attempt %d: %s", c->be->name, i + 1, http_errstr(c->h));
    } else if (e) {
      snprintf(why, n, "cannot build the model request: %s", err_str(e));
      return e;
    } else if (a.status == 200) {
      e = c->be->parse(buf_str(&c->resp.body), resp, why, n);
      if (e) {
        log_warn("llm", "%s: answer not in the documented format: %s", c->be->name, why);
        failed(c);
        return e;
      }
      c->fails = 0;
      return ERR_OK;
    } else {
      int64_t named = 0;
      msg[0] = 0;
      c->be->parse_error(buf_str(&c->resp.body), msg, sizeof msg, &named);
      if (c->retry_after_ms)
        named = c->retry_after_ms;
      if (a.status == 400 && c->json_level > 0 && c->be->rejects_schema &&
          c->be->rejects_schema(buf_str(&c->resp.body))) {
        c->json_level--;
        log_warn("llm", "%s: server refuses structured output (%s); asking with %s",
                 c->be->name, msg, c->json_level ? "JSON mode" : "plain text");
        i--;   /* not the server's fault: does not use up an attempt */
        continue;
      }
      char *safe = log_redact(msg);
      snprintf(why, n, "the %s model answered HTTP %ld%s%s", c->be->name, a.status,
               safe && *safe ? ": " : "", safe ? safe : "");
      free(safe);
      log_warn("llm", "%s: attempt %d: %s", c->be->name, i + 1, why);
      if (a.status == 401 || a.status == 403) {
        failed(c);
        return ERR_DENIED;
      }
      if (a.status != 429 && a.status < 500 && a.status != 408) {
        failed(c);
        return ERR_INVAL;
      }
      e = ERR_UNAVAILABLE;
      if (named) {
        if (named > c->opts.max_retry_after_ms) {
          snprintf(why, n, "the %s model asks to wait %lld s; not waiting", c->be->name,
                   (long long)named / 1000);
          break;
        }
        wait = named;
      }
    }
    if (i + 1 >= c->opts.max_attempts)
      break;
    left = c->opts.deadline_ms - (mono_ms() - start);
    if (wait >= left) {
      e = ERR_TIMEOUT;
      snprintf(why, n, "the %s model did not answer within %d s", c->be->name,
               c->opts.deadline_ms / 1000);
      break;
    }
    sleep_ms(wait);
  }
  failed(c);
  return e;
}
