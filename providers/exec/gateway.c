/* providers/exec/gateway.c — the "gateway" execution backend: forwards a
 * step to a remote HTTP executor (an OpenClaw-style gateway).
 *
 * DESIGN
 * - One run() is one POST {url}/v1/execute with "Authorization: Bearer
 *   <token>" and the body {"argv": [...], "cwd", "stdin", "timeout_ms"};
 *   the answer is {"exit_code": N, "output": "..."}.  The remote side runs
 *   and kills the command; here only the HTTP exchange is bounded.
 * - Each run uses its own curl handle on the calling thread (handles are
 *   never shared), so runs may go on in parallel.  The instance is
 *   read-only after create().
 * - Cancel is seen by curl's progress callback, at least every second or
 *   so; the timeout is curl's whole-transfer timeout (timeout_ms plus
 *   GATEWAY_SLACK_MS for the round trip).  The answer is bounded.
 *
 * Instance options: url (required, http:// or https://), token. */
#include "exec.h"

#include <assert.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/buf.h"

#define GATEWAY_SLACK_MS 2000
#define GATEWAY_ANSWER_MAX (8u << 20)
#define GATEWAY_CAPTURE_MAX 65536

struct gateway_inst {
  struct exec_instance base;
  char *url;          /* without a trailing slash */
  char *auth;         /* "Authorization: Bearer ..." or NULL */
};

struct gateway_xfer {
  struct buf body;
  atomic_int *cancel;
  int cancelled;
};

static const char *gateway_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; p && i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static struct gateway_inst *gateway_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_gateway);
  return (struct gateway_inst *)inst;
}

static long gateway_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- instance ---------------------------------------------------------- */

static void gateway_destroy(struct exec_instance *inst)
{
  struct gateway_inst *gi;

  if (!inst)
    return;
  gi = gateway_from(inst);
  free(gi->url);
  free(gi->auth);
  free(gi);
}

static enum err gateway_create(const struct cfg *cfg,
                               const struct cfg_provider *p,
                               struct exec_instance **out)
{
  const char *url = gateway_opt(p, "url"), *tok = gateway_opt(p, "token");
  struct gateway_inst *gi;
  struct buf b;
  size_t len;

  (void)cfg;
  *out = NULL;
  if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
    return ERR_CONFIG;
  gi = calloc(1, sizeof *gi);
  if (!gi)
    return ERR_NOMEM;
  gi->base.backend = &exec_gateway;
  snprintf(gi->base.name, sizeof gi->base.name, "%s",
           p && p->name ? p->name : "gateway");
  len = strlen(url);
  while (len && url[len - 1] == '/')
    len--;
  gi->url = strndup(url, len);
  if (tok && *tok) {
    buf_init(&b, 4096);
    if (buf_printf(&b, "Authorization: Bearer %s", tok) == ERR_OK)
      gi->auth = buf_detach(&b);
    buf_release(&b);
  }
  if (!gi->url || (tok && *tok && !gi->auth)) {
    gateway_destroy(&gi->base);
    return ERR_NOMEM;
  }
  *out = &gi->base;
  return ERR_OK;
}

/* ---- the exchange ------------------------------------------------------ */

static size_t gateway_write(char *p, size_t size, size_t n, void *ud)
{
  struct gateway_xfer *x = ud;

  return buf_append(&x->body, p, size * n) == ERR_OK ? size * n : 0;
}

static int gateway_progress(void *ud, curl_off_t dt, curl_off_t dn,
                            curl_off_t ut, curl_off_t un)
{
  struct gateway_xfer *x = ud;

  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  if (x->cancel && atomic_load(x->cancel)) {
    x->cancelled = 1;
    return 1;
  }
  return 0;
}

static json_object *gateway_request_json(const struct exec_request *req)
{
  json_object *o = json_object_new_object(), *argv = json_object_new_array();
  size_t i;

  for (i = 0; req->argv[i]; i++)
    json_object_array_add(argv, json_object_new_string(req->argv[i]));
  json_object_object_add(o, "argv", argv);
  if (req->cwd)
    json_object_object_add(o, "cwd", json_object_new_string(req->cwd));
  if (req->stdin_data)
    json_object_object_add(o, "stdin",
                           json_object_new_string_len(req->stdin_data,
                                                      (int)req->stdin_len));
  json_object_object_add(o, "timeout_ms",
                         json_object_new_int(req->timeout_ms));
  return o;
}

/* Sends one request; the answer body lands in x->body. */
static CURLcode gateway_http(const struct gateway_inst *gi, const char *path,
                             const char *post, long timeout_ms,
                             struct gateway_xfer *x, long *status)
{
  struct curl_slist *h = NULL;
  char url[1200];
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  CURL *c = curl_easy_init();

  snprintf(url, sizeof url, "%s%s", gi->url, path);
  h = curl_slist_append(h, "Content-Type: application/json");
  if (gi->auth)
    h = curl_slist_append(h, gi->auth);
  if (!c || !h)
    goto out;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  if (timeout_ms > 0)
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  if (post)
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, gateway_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, gateway_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
out:
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return rc;
}

/* Takes exit_code and output from the answer; output keeps its tail. */
static enum err gateway_parse(const struct exec_request *req, const char *body,
                              struct exec_result *res)
{
  json_object *o = json_tokener_parse(body), *code, *out;
  size_t max = req->capture_max ? req->capture_max : GATEWAY_CAPTURE_MAX;
  const char *s = "";
  size_t len = 0, keep;
  enum err e = ERR_PARSE;

  if (!o || !json_object_object_get_ex(o, "exit_code", &code) ||
      !json_object_is_type(code, json_type_int))
    goto out;
  res->exit_code = json_object_get_int(code);
  if (json_object_object_get_ex(o, "output", &out) &&
      json_object_is_type(out, json_type_string)) {
    s = json_object_get_string(out);
    len = (size_t)json_object_get_string_len(out);
  }
  if (req->on_output && len)
    req->on_output(req->ud, s, len);
  keep = len < max ? len : max;
  res->output = strndup(s + (len - keep), keep);
  res->output_len = keep;
  res->output_total = len;
  res->truncated = len > keep;
  e = res->output ? ERR_OK : ERR_NOMEM;
out:
  json_object_put(o);
  return e;
}

static enum err gateway_outcome(const struct gateway_inst *gi,
                                const struct exec_request *req, CURLcode rc,
                                long status, struct gateway_xfer *x,
                                struct exec_result *res)
{
  if (x->cancelled) {
    res->cancelled = 1;
    return ERR_CANCELLED;
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    res->timed_out = 1;
    snprintf(res->error, sizeof res->error, "gateway '%.100s' timed out",
             gi->url);
    return ERR_TIMEOUT;
  }
  if (rc != CURLE_OK) {
    snprintf(res->error, sizeof res->error, "gateway '%.100s': %s", gi->url,
             curl_easy_strerror(rc));
    return ERR_NET;
  }
  if (status != 200) {
    snprintf(res->error, sizeof res->error,
             "gateway '%.100s' answered HTTP %ld", gi->url, status);
    return status == 401 || status == 403 ? ERR_DENIED : ERR_NET;
  }
  if (gateway_parse(req, buf_str(&x->body), res)) {
    snprintf(res->error, sizeof res->error,
             "gateway '%.100s': malformed answer", gi->url);
    return ERR_PARSE;
  }
  return ERR_OK;
}

static enum err gateway_run(struct exec_instance *inst,
                            const struct exec_request *req,
                            struct exec_result *res)
{
  struct gateway_inst *gi = gateway_from(inst);
  struct gateway_xfer x = {.cancel = req->cancel};
  long status = 0, start = gateway_now_ms();
  json_object *o;
  CURLcode rc;
  enum err e;

  memset(res, 0, sizeof *res);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  if (req->cancel && atomic_load(req->cancel)) {
    res->cancelled = 1;
    return ERR_CANCELLED;
  }
  buf_init(&x.body, GATEWAY_ANSWER_MAX);
  o = gateway_request_json(req);
  rc = gateway_http(gi, "/v1/execute",
                    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                    req->timeout_ms > 0 ? req->timeout_ms + GATEWAY_SLACK_MS
                                        : 0,
                    &x, &status);
  json_object_put(o);
  e = gateway_outcome(gi, req, rc, status, &x, res);
  buf_release(&x.body);
  res->duration_ms = gateway_now_ms() - start;
  return e;
}

static enum err gateway_health(struct exec_instance *inst,
                               struct exec_health *out)
{
  struct gateway_inst *gi = gateway_from(inst);
  struct gateway_xfer x = {0};
  long status = 0;
  CURLcode rc;

  buf_init(&x.body, 4096);
  rc = gateway_http(gi, "/v1/health", NULL, 10000, &x, &status);
  buf_release(&x.body);
  out->ok = rc == CURLE_OK && status == 200;
  if (out->ok)
    snprintf(out->detail, sizeof out->detail, "gateway: %.200s up", gi->url);
  else if (rc != CURLE_OK)
    snprintf(out->detail, sizeof out->detail, "gateway: %.120s: %s", gi->url,
             curl_easy_strerror(rc));
  else
    snprintf(out->detail, sizeof out->detail, "gateway: %.120s: HTTP %ld",
             gi->url, status);
  return ERR_OK;
}

const struct exec_backend exec_gateway = {
  .name = "gateway",
  .create = gateway_create,
  .run = gateway_run,
  .health = gateway_health,
  .destroy = gateway_destroy,
};
