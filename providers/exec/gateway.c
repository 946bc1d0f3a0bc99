/* providers/exec/gateway.c — the "gateway" execution backend: forwards a
 * step to a remote HTTP executor (an OpenClaw-style gateway).
 *
 * DESIGN
 * - One run() is one POST {url}/v1/execute with "Authorization: Bearer
 *   <token>" and the body {"argv": [...], "cwd", "stdin", "timeout_ms"};
 *   the answer is {"exit_code": N, "output": "..."}.  The remote side runs
 *   and kills the command; here only the HTTP exchange is bounded.
 * - Each run uses its own HTTP handle (engine/http.h) on the calling thread
 *   (handles are never shared), so runs may go on in parallel.  The
 *   instance is read-only after create().
 * - Cancel is seen by the handle's cancel hook, at least every
 *   HTTP_CANCEL_POLL_MS; the timeout is the whole-request deadline
 *   (timeout_ms plus GATEWAY_SLACK_MS for the round trip).  The answer is
 *   bounded.
 *
 * Instance options: url (required, http:// or https://), token. */
#include "exec.h"

#include <assert.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/buf.h"
#include "../../engine/http.h"

#define GATEWAY_SLACK_MS 2000
#define GATEWAY_ANSWER_MAX (8u << 20)
#define GATEWAY_CAPTURE_MAX 65536

struct gateway_inst {
  struct exec_instance base;
  char *url;          /* without a trailing slash */
  char *auth;         /* "Authorization: Bearer ..." or NULL */
};

struct gateway_xfer {
  struct http_resp resp;
  atomic_int *cancel;
  int cancelled;
  char error[200];
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

static int gateway_cancelled(void *ud)
{
  struct gateway_xfer *x = ud;

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

/* Sends one request (a POST when post is set, else a GET); the answer lands
 * in x->resp, a failure's message in x->error. */
static enum err gateway_http(const struct gateway_inst *gi, const char *path,
                             const char *post, long timeout_ms,
                             struct gateway_xfer *x, long *status)
{
  const char *hdr[3] = {"Content-Type: application/json", gi->auth, NULL};
  char url[1200];
  struct http_req rq = {.url = url, .headers = hdr, .timeout_ms = timeout_ms,
                        .connect_timeout_ms = 10000, .max_response = GATEWAY_ANSWER_MAX};
  struct http *h = http_new();
  enum err e;

  memset(&x->resp, 0, sizeof x->resp);
  *status = 0;
  if (!h) {
    snprintf(x->error, sizeof x->error, "out of memory");
    return ERR_NOMEM;
  }
  snprintf(url, sizeof url, "%s%s", gi->url, path);
  if (post) {
    rq.body = post;
    rq.body_len = strlen(post);
  }
  http_set_cancel(h, gateway_cancelled, x);
  e = http_do(h, &rq, &x->resp);
  *status = x->resp.status;
  snprintf(x->error, sizeof x->error, "%s", http_errstr(h));
  http_free(h);
  return e;
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
                                const struct exec_request *req, enum err rc,
                                long status, struct gateway_xfer *x,
                                struct exec_result *res)
{
  if (x->cancelled) {
    res->cancelled = 1;
    return ERR_CANCELLED;
  }
  if (rc == ERR_TIMEOUT) {
    res->timed_out = 1;
    snprintf(res->error, sizeof res->error, "gateway '%.100s' timed out",
             gi->url);
    return ERR_TIMEOUT;
  }
  if (rc != ERR_OK) {
    snprintf(res->error, sizeof res->error, "gateway '%.100s': %.120s", gi->url,
             x->error);
    return rc == ERR_TOOBIG ? ERR_TOOBIG : ERR_NET;
  }
  if (status != 200) {
    snprintf(res->error, sizeof res->error,
             "gateway '%.100s' answered HTTP %ld", gi->url, status);
    return status == 401 || status == 403 ? ERR_DENIED : ERR_NET;
  }
  if (gateway_parse(req, buf_str(&x->resp.body), res)) {
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
  enum err rc, e;

  memset(res, 0, sizeof *res);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  if (req->cancel && atomic_load(req->cancel)) {
    res->cancelled = 1;
    return ERR_CANCELLED;
  }
  o = gateway_request_json(req);
  rc = gateway_http(gi, "/v1/execute",
                    json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                    req->timeout_ms > 0 ? req->timeout_ms + GATEWAY_SLACK_MS
                                        : 0,
                    &x, &status);
  json_object_put(o);
  e = gateway_outcome(gi, req, rc, status, &x, res);
  http_resp_release(&x.resp);
  res->duration_ms = gateway_now_ms() - start;
  return e;
}

static enum err gateway_health(struct exec_instance *inst,
                               struct exec_health *out)
{
  struct gateway_inst *gi = gateway_from(inst);
  struct gateway_xfer x = {0};
  long status = 0;
  enum err rc;

  rc = gateway_http(gi, "/v1/health", NULL, 10000, &x, &status);
  http_resp_release(&x.resp);
  out->ok = rc == ERR_OK && status == 200;
  if (out->ok)
    snprintf(out->detail, sizeof out->detail, "gateway: %.200s up", gi->url);
  else if (rc != ERR_OK)
    snprintf(out->detail, sizeof out->detail, "gateway: %.120s: %.100s", gi->url,
             x.error);
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
