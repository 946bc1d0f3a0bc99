/* bot/telegram.c — see telegram.h.
 *
 * DESIGN: two threads, each with its own HTTP handle (engine/http.h: one
 * kept-alive connection) and its own ledger connection.
 * - The poller (tg_run's caller) long-polls getUpdates and handles each
 *   batch in one ledger transaction: every update's effects (through the
 *   conversation manager, which only writes to the ledger and the outbox)
 *   and the offset past the batch commit together, so a crash anywhere
 *   neither loses nor repeats an update, at one disk sync per batch.  A batch
 *   that fails is replayed one update per transaction.  Then it rings the
 *   outbox bell (ledger_outbox_ring) and asks for the next batch.
 * - The sender drains the "telegram" outbox oldest first: a message goes when
 *   tg_pace allows its chat (and, for an edit, its message); a chat held back
 *   holds its later messages too, so each chat keeps its order.  It sleeps on
 *   the bell until the next message can go (TG_IDLE_POLL_MS at most, for
 *   messages queued by other processes), and through a full global window
 *   without waking.  A long text goes one piece per turn, its progress kept
 *   in the ledger, so pacing applies between pieces and a restart resumes.
 * Nothing else is shared between the two but the read-only cfg and the
 * stop flags.
 * Before them, at start-up, an opener thread calls getMe on the poller's
 * connection while main opens the database, then (tg_poll_ahead) sends the
 * first getUpdates from the stored offset while the orchestrator starts;
 * tg_run joins it and handles that answer like any other batch.  Its
 * updates are only confirmed by the next getUpdates, after the batch is
 * committed, so a start-up that fails midway loses nothing. */
#include "telegram.h"

#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bot/tg_pace.h"
#include "engine/buf.h"
#include "engine/http.h"
#include "engine/log.h"
#include "engine/persona.h"

#define TG_MIN_POLL_MS 200          /* an empty getUpdates never loops faster */
#define TG_RESP_MAX (8 * 1024 * 1024)
#define TG_CHUNK 3500               /* bytes of plain text per message (< 4096 chars) */
#define TG_DOC_PARTS 3              /* more parts than this go as a file */
#define TG_BATCH 200                /* due messages looked at per turn */
#define TG_IDLE_POLL_MS 250         /* the sender's look at the outbox without a bell */
#define TG_TRIM_IDLE_MS 1000        /* quiet this long: free heap goes back to the system */

struct tg_http {
  struct http *h;
  char *base;                       /* <api_base>/bot<token>/ */
  volatile sig_atomic_t *stop;
  atomic_int quit;                  /* tg_free: cancel what is in flight */
};

struct tg_res {
  long status;                      /* HTTP status, 0 for a network error */
  int ok;
  long error_code;
  char desc[256];
  int retry_after;
  json_object *root;
  json_object *result;              /* borrowed from root */
};

struct tg {
  const struct cfg *cfg;
  struct tg_http http;              /* the poller's connection */
  struct tg_http out;               /* the sender's connection */
  char bot_name[128];
  char username[64];
  /* The opener thread: getMe, then (tg_poll_ahead) the first getUpdates. */
  pthread_t opener;
  int opening;                      /* opener not joined yet */
  pthread_mutex_t omu;
  pthread_cond_t ocv;
  int me_done;                      /* getMe answered (omu) */
  int ahead;                        /* 1: poll from ahead_offset; -1: don't (omu) */
  volatile sig_atomic_t *ahead_stop;
  int64_t ahead_offset;
  int64_t ahead_t0;
  enum err ahead_err;
  struct tg_res ahead_res;          /* valid when ahead_err was set by a poll */
  int ahead_done;
  enum err open_err;
  char open_msg[512];
  pthread_t sender;
  int sender_started;
  volatile sig_atomic_t sender_stop;
  int64_t flush_deadline;
  /* sender-only state */
  struct tg_pace *pace;
  int no_document;
  int no_typing;                    /* poller-only */
};

/* ---- HTTP --------------------------------------------------------------- */

static int tg_cancelled(void *ud)
{
  struct tg_http *h = ud;
  return atomic_load(&h->quit) || (h->stop && *h->stop) ? 1 : 0;
}

static enum err tg_http_init(struct tg_http *c, const struct cfg *cfg)
{
  struct buf b = BUF_INIT(4096);

  memset(c, 0, sizeof *c);
  if (buf_printf(&b, "%s/bot%s/", cfg->telegram_api_base, cfg->telegram_token))
    return ERR_NOMEM;
  c->base = buf_detach(&b);
  c->h = http_new();
  if (!c->base || !c->h)
    return ERR_NOMEM;
  http_set_cancel(c->h, tg_cancelled, c);
  /* A restart resumes the last TLS session instead of a full handshake. */
  if (cfg->telegram_tls_resume && cfg->home) {
    buf_clear(&b);
    if (buf_printf(&b, "%s/telegram.tls", cfg->home) ||
        http_set_session_file(c->h, buf_str(&b))) {
      buf_release(&b);
      return ERR_NOMEM;
    }
    buf_release(&b);
  }
  return ERR_OK;
}

static void tg_http_release(struct tg_http *c)
{
  http_free(c->h);
  free(c->base);
  memset(c, 0, sizeof *c);
}

static void tg_res_release(struct tg_res *r)
{
  if (r->root)
    json_object_put(r->root);
  memset(r, 0, sizeof *r);
}

static void tg_res_parse(struct tg_res *r, const char *body)
{
  json_object *v, *p;

  r->root = json_tokener_parse(body);
  if (!r->root || !json_object_is_type(r->root, json_type_object)) {
    snprintf(r->desc, sizeof r->desc, "malformed response (HTTP %ld)", r->status);
    return;
  }
  r->ok = json_object_object_get_ex(r->root, "ok", &v) && json_object_get_boolean(v);
  if (json_object_object_get_ex(r->root, "error_code", &v))
    r->error_code = (long)json_object_get_int64(v);
  if (json_object_object_get_ex(r->root, "description", &v))
    snprintf(r->desc, sizeof r->desc, "%s", json_object_get_string(v));
  if (json_object_object_get_ex(r->root, "parameters", &p) &&
      json_object_object_get_ex(p, "retry_after", &v))
    r->retry_after = json_object_get_int(v);
  json_object_object_get_ex(r->root, "result", &r->result);
}

/* Calls a method with a JSON body (or a multipart form when form is set). */
static enum err tg_call(struct tg_http *c, const char *method, json_object *body,
                        const struct http_form *form, long timeout_s, struct tg_res *r)
{
  struct buf url = BUF_INIT(4096);
  const char *hdr[2] = {"Content-Type: application/json", NULL};
  struct http_req rq = {.headers = hdr, .timeout_ms = timeout_s * 1000,
                        .max_response = TG_RESP_MAX};
  struct http_resp rs;
  enum err e;

  memset(r, 0, sizeof *r);
  if (buf_printf(&url, "%s%s", c->base, method))
    return ERR_NOMEM;
  rq.url = buf_str(&url);
  if (form) {
    hdr[0] = form->content_type;
    rq.body = form->body.data;
    rq.body_len = form->body.len;
  } else {
    rq.body = body ? json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN) : "{}";
    rq.body_len = strlen(rq.body);
  }
  e = http_do(c->h, &rq, &rs);
  buf_release(&url);
  if (e) {
    snprintf(r->desc, sizeof r->desc, "%s", http_errstr(c->h));
    http_resp_release(&rs);
    return e == ERR_CANCELLED ? ERR_CANCELLED : ERR_NET;
  }
  r->status = rs.status;
  tg_res_parse(r, buf_str(&rs.body));
  http_resp_release(&rs);
  if (!r->error_code && !r->ok)
    r->error_code = r->status;
  return r->ok ? ERR_OK : ERR_UNAVAILABLE;
}

/* ---- text --------------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at s (max n bytes), 0 when invalid. */
static size_t tg_utf8_len(const unsigned char *s, size_t n)
{
  size_t len;

  if (s[0] < 0x80)
    return 1;
  if ((s[0] & 0xE0) == 0xC0 && s[0] >= 0xC2)
    len = 2;
  else if ((s[0] & 0xF0) == 0xE0)
    len = 3;
  else if ((s[0] & 0xF8) == 0xF0 && s[0] <= 0xF4)
    len = 4;
  else
    return 0;
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return len;
}

char *tg_html_escape(const char *s, size_t n)
{
  struct buf b = BUF_INIT(n * 5 + 16);
  enum err e = ERR_OK;

  for (size_t i = 0; i < n && !e;) {
    size_t k = tg_utf8_len((const unsigned char *)s + i, n - i);
    if (k == 0) {
      e = buf_append(&b, "?", 1);
      i++;
      continue;
    }
    if (s[i] == '&')
      e = buf_appends(&b, "&amp;");
    else if (s[i] == '<')
      e = buf_appends(&b, "&lt;");
    else if (s[i] == '>')
      e = buf_appends(&b, "&gt;");
    else
      e = buf_append(&b, s + i, k);
    i += k;
  }
  if (e) {
    buf_release(&b);
    return NULL;
  }
  return buf_detach(&b);
}

size_t tg_split_len(const char *s, size_t n, size_t max)
{
  size_t cut;

  if (n <= max)
    return n;
  cut = max;
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
    cut--;
  for (size_t i = cut; i > max - max / 4 && i > 0; i--)
    if (s[i - 1] == '\n')
      return i;
  return cut ? cut : max;
}

/* ---- updates ------------------------------------------------------------ */

static int64_t tg_get_i64(json_object *o, const char *k, int *found)
{
  json_object *v;

  *found = json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int);
  return *found ? json_object_get_int64(v) : 0;
}

static const char *tg_get_str(json_object *o, const char *k)
{
  json_object *v;

  if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

static json_object *tg_get_obj(json_object *o, const char *k)
{
  json_object *v;

  if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_object))
    return NULL;
  return v;
}

/* chat.id and from.id/username of a message. */
static enum err tg_parse_people(json_object *msg, json_object *from, struct tg_update *u)
{
  json_object *chat = tg_get_obj(msg, "chat");
  int f1 = 0, f2 = 0;

  if (!chat || !from)
    return ERR_PARSE;
  u->chat_id = tg_get_i64(chat, "id", &f1);
  u->user_id = tg_get_i64(from, "id", &f2);
  u->user_name = tg_get_str(from, "username");
  return f1 && f2 ? ERR_OK : ERR_PARSE;
}

enum err tg_update_parse(json_object *o, struct tg_update *u)
{
  json_object *m, *cb;
  int found = 0;

  memset(u, 0, sizeof *u);
  if (!o || !json_object_is_type(o, json_type_object))
    return ERR_PARSE;
  u->update_id = tg_get_i64(o, "update_id", &found);
  if (!found || u->update_id < 0)
    return ERR_PARSE;
  if ((m = tg_get_obj(o, "message"))) {
    u->kind = TG_UPD_MESSAGE;
    u->text = tg_get_str(m, "text");
    if (!u->text)
      return ERR_UNSUPPORTED;
    return tg_parse_people(m, tg_get_obj(m, "from"), u);
  }
  if ((cb = tg_get_obj(o, "callback_query"))) {
    u->kind = TG_UPD_CALLBACK;
    u->callback_id = tg_get_str(cb, "id");
    u->data = tg_get_str(cb, "data");
    if (!u->callback_id || !u->data)
      return ERR_PARSE;
    return tg_parse_people(tg_get_obj(cb, "message"), tg_get_obj(cb, "from"), u);
  }
  return ERR_UNSUPPORTED;    /* edited_message and the rest: skipped */
}

/* ---- open --------------------------------------------------------------- */

/* The command menu; called from the sender thread on its own connection,
 * so that the first getUpdates need not wait for it. */
static void tg_set_commands(struct tg_http *h)
{
  json_object *body = json_object_new_object(), *arr = json_object_new_array();
  char *menu = persona_render(persona_current(), "menu", NULL);
  struct tg_res r;

  /* The persona's "menu": one "command: description" per line. */
  for (char *line = menu, *next; line && *line; line = next) {
    char *colon, *end = strchr(line, '\n');
    next = end ? end + 1 : line + strlen(line);
    if (end)
      *end = '\0';
    if (!(colon = strchr(line, ':')) || colon == line)
      continue;
    *colon = '\0';
    json_object *c = json_object_new_object();
    json_object_object_add(c, "command", json_object_new_string(line));
    json_object_object_add(c, "description", json_object_new_string(colon + 1 + (colon[1] == ' ')));
    json_object_array_add(arr, c);
  }
  free(menu);
  json_object_object_add(body, "commands", arr);
  if (tg_call(h, "setMyCommands", body, NULL, 15, &r))
    log_warn("telegram", "setMyCommands unsupported or failed (%s); no command menu", r.desc);
  tg_res_release(&r);
  json_object_put(body);
}

static enum err tg_get_updates(struct tg *t, int64_t offset, struct tg_res *r);

/* getMe on t's poller connection; the outcome in t->open_err and t->open_msg. */
static void tg_get_me(struct tg *t)
{
  struct tg_res r;
  const char *name;
  enum err e;

  if ((e = tg_call(&t->http, "getMe", NULL, NULL, 20, &r)) || !r.result) {
    if (r.status == 401 || r.status == 404 || r.error_code == 401)
      snprintf(t->open_msg, sizeof t->open_msg,
               "Telegram rejected the bot token (telegram.token): %s", r.desc);
    else
      snprintf(t->open_msg, sizeof t->open_msg, "cannot reach the Telegram Bot API at %s: %s",
               t->cfg->telegram_api_base, r.desc[0] ? r.desc : err_str(e));
    t->open_err = e ? e : ERR_UNAVAILABLE;
  } else {
    name = tg_get_str(r.result, "username");
    snprintf(t->username, sizeof t->username, "%s", name ? name : "");
    snprintf(t->bot_name, sizeof t->bot_name, "@%s", t->username);
  }
  tg_res_release(&r);
}

/* The opener: getMe, then, once tg_poll_ahead gives it the offset, the
 * first getUpdates on the same (already open) connection. */
static void *tg_opener_main(void *arg)
{
  struct tg *t = arg;
  int go;

  tg_get_me(t);
  pthread_mutex_lock(&t->omu);
  t->me_done = 1;
  pthread_cond_broadcast(&t->ocv);
  while (!t->open_err && !t->ahead)
    pthread_cond_wait(&t->ocv, &t->omu);
  go = !t->open_err && t->ahead > 0;
  pthread_mutex_unlock(&t->omu);
  if (go) {
    t->http.stop = t->ahead_stop;   /* the connection is this thread's until joined */
    t->ahead_t0 = ledger_now_ms();
    t->ahead_err = tg_get_updates(t, t->ahead_offset, &t->ahead_res);
    t->ahead_done = 1;
  }
  return NULL;
}

/* Joins the opener, telling it first not to poll if nobody asked it to. */
static void tg_opener_join(struct tg *t)
{
  if (!t->opening)
    return;
  pthread_mutex_lock(&t->omu);
  if (!t->ahead)
    t->ahead = -1;
  pthread_cond_broadcast(&t->ocv);
  pthread_mutex_unlock(&t->omu);
  pthread_join(t->opener, NULL);
  t->opening = 0;
}

enum err tg_open_begin(const struct cfg *cfg, struct tg **out)
{
  struct tg *t = calloc(1, sizeof *t);

  *out = NULL;
  if (!t || tg_http_init(&t->http, cfg)) {
    free(t);
    return ERR_NOMEM;
  }
  t->cfg = cfg;
  pthread_mutex_init(&t->omu, NULL);
  pthread_cond_init(&t->ocv, NULL);
  if (pthread_create(&t->opener, NULL, tg_opener_main, t) == 0) {
    t->opening = 1;
  } else {
    tg_get_me(t);   /* no thread: the caller waits here instead */
    t->me_done = 1;
  }
  *out = t;
  return ERR_OK;
}

enum err tg_open_end(struct tg *t, char *errbuf, size_t errlen)
{
  pthread_mutex_lock(&t->omu);
  while (!t->me_done)
    pthread_cond_wait(&t->ocv, &t->omu);
  pthread_mutex_unlock(&t->omu);
  if (t->open_err) {
    tg_opener_join(t);
    snprintf(errbuf, errlen, "%s", t->open_msg);
  }
  return t->open_err;
}

enum err tg_open(const struct cfg *cfg, struct tg **out, char *errbuf, size_t errlen)
{
  struct tg *t;
  enum err e;

  *out = NULL;
  if (tg_open_begin(cfg, &t)) {
    snprintf(errbuf, errlen, "out of memory");
    return ERR_NOMEM;
  }
  if ((e = tg_open_end(t, errbuf, errlen))) {
    tg_free(t);
    return e;
  }
  *out = t;
  return ERR_OK;
}

void tg_free(struct tg *t)
{
  if (!t)
    return;
  atomic_store(&t->http.quit, 1);
  tg_opener_join(t);
  if (t->ahead_done)
    tg_res_release(&t->ahead_res);
  pthread_mutex_destroy(&t->omu);
  pthread_cond_destroy(&t->ocv);
  tg_http_release(&t->http);
  free(t);
}

const char *tg_bot_name(const struct tg *t)
{
  return t->bot_name;
}

/* ---- sender ------------------------------------------------------------- */

static void tg_sleep_ms(int64_t ms)
{
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  if (ms > 0)
    nanosleep(&ts, NULL);
}

/* inline_keyboard from [[{"text":..,"data":..}]]; NULL when none. */
static json_object *tg_markup(const char *buttons_json, int for_edit)
{
  json_object *in = buttons_json ? json_tokener_parse(buttons_json) : NULL;
  json_object *kb = json_object_new_array(), *mk = json_object_new_object();

  for (size_t i = 0; in && json_object_is_type(in, json_type_array) &&
                     i < json_object_array_length(in); i++) {
    json_object *row = json_object_array_get_idx(in, i), *orow = json_object_new_array();
    for (size_t k = 0; json_object_is_type(row, json_type_array) &&
                       k < json_object_array_length(row); k++) {
      json_object *b = json_object_array_get_idx(row, k), *ob;
      const char *tx = json_object_is_type(b, json_type_object) ? tg_get_str(b, "text") : NULL;
      const char *da = tx ? tg_get_str(b, "data") : NULL;
      if (!da)
        continue;
      ob = json_object_new_object();
      json_object_object_add(ob, "text", json_object_new_string(tx));
      json_object_object_add(ob, "callback_data", json_object_new_string(da));
      json_object_array_add(orow, ob);
    }
    json_object_array_add(kb, orow);
  }
  if (in)
    json_object_put(in);
  json_object_object_add(mk, "inline_keyboard", kb);
  if (json_object_array_length(kb) == 0 && !for_edit) {
    json_object_put(mk);
    return NULL;
  }
  return mk;
}

enum tg_outcome { TG_DONE, TG_RETRY, TG_FAIL, TG_PLAIN, TG_GONE };

/* Classifies a failed call; sets *wait_ms for a retry. */
static enum tg_outcome tg_classify(struct tg *t, const struct outbox_msg *m, enum err e,
                                   const struct tg_res *r, int64_t *wait_ms)
{
  int64_t now = ledger_now_ms();

  if (!e)
    return TG_DONE;
  if (r->error_code == 429 || r->status == 429) {
    *wait_ms = (int64_t)(r->retry_after > 0 ? r->retry_after : 1) * 1000;
    tg_pace_hold(t->pace, m->chat_id, now, now + *wait_ms);
    return TG_RETRY;
  }
  if (r->error_code == 400 && strstr(r->desc, "can't parse entities"))
    return TG_PLAIN;
  if (r->error_code == 400 && strstr(r->desc, "message is not modified"))
    return TG_DONE;
  if (r->error_code == 400 && strstr(r->desc, "message to edit not found"))
    return TG_GONE;
  if (r->error_code == 403 || (r->error_code >= 400 && r->error_code < 500 && r->root))
    return TG_FAIL;
  {
    int shift = m->attempts < 6 ? m->attempts : 6;
    *wait_ms = (1000LL << shift) + rand() % 1000;
    tg_pace_hold_chat(t->pace, m->chat_id, now, now + *wait_ms);
  }
  return TG_RETRY;
}

static json_object *tg_text_body(int64_t chat, const char *text, size_t n, int plain)
{
  json_object *b = json_object_new_object();
  char *esc = plain ? NULL : tg_html_escape(text, n);

  json_object_object_add(b, "chat_id", json_object_new_int64(chat));
  if (esc) {
    json_object_object_add(b, "text", json_object_new_string(esc));
    json_object_object_add(b, "parse_mode", json_object_new_string("HTML"));
  } else {
    json_object_object_add(b, "text", json_object_new_string_len(text, (int)n));
  }
  free(esc);
  return b;
}

static void tg_key(char *out, size_t n, const struct outbox_msg *m)
{
  snprintf(out, n, "tg.msg.%" PRId64 ".%s", m->chat_id, m->edit_key);
}

/* Sends or edits one piece; remembers the message id of a keyed message. */
static enum err tg_send_piece(struct tg *t, struct ledger *l, const struct outbox_msg *m,
                              const char *text, size_t n, int last, int plain,
                              struct tg_res *r)
{
  char key[200], *mid = NULL, num[32];
  json_object *body = tg_text_body(m->chat_id, text, n, plain), *mk;
  enum err e;
  int edit = 0;

  if (m->edit_key) {
    tg_key(key, sizeof key, m);
    if (l->ops->kv_get(l, key, &mid) == ERR_OK && mid) {
      long long id = strtoll(mid, NULL, 10);
      json_object_object_add(body, "message_id", json_object_new_int64(id));
      edit = 1;
    }
    free(mid);
  }
  if (last && (mk = tg_markup(m->buttons_json, edit)))
    json_object_object_add(body, "reply_markup", mk);
  e = tg_call(&t->out, edit ? "editMessageText" : "sendMessage", body, NULL, 30, r);
  json_object_put(body);
  if (!e)
    tg_pace_sent(t->pace, m->chat_id, m->edit_key, ledger_now_ms());
  if (!e && !edit && m->edit_key && r->result) {
    json_object *v;
    if (json_object_object_get_ex(r->result, "message_id", &v)) {
      snprintf(num, sizeof num, "%" PRId64, json_object_get_int64(v));
      l->ops->kv_set(l, key, num);
    }
  }
  if (e && edit && r->error_code == 400 && strstr(r->desc, "message to edit not found"))
    l->ops->kv_set(l, key, "");
  return e;
}

static enum err tg_send_document(struct tg *t, const struct outbox_msg *m, struct tg_res *r)
{
  struct http_form f;
  char chat[32];
  enum err e;

  snprintf(chat, sizeof chat, "%" PRId64, m->chat_id);
  http_form_init(&f, TG_RESP_MAX + 4096);
  if ((e = http_form_add(&f, "chat_id", NULL, NULL, chat, strlen(chat))) ||
      (e = http_form_add(&f, "caption", NULL, NULL, m->text,
                         tg_split_len(m->text, strlen(m->text), 900))) ||
      (e = http_form_add(&f, "document", "output.txt", "text/plain", m->text,
                         strlen(m->text))) ||
      (e = http_form_finish(&f))) {
    memset(r, 0, sizeof *r);
    snprintf(r->desc, sizeof r->desc, "cannot build the upload: %s", err_str(e));
    http_form_release(&f);
    return e;
  }
  e = tg_call(&t->out, "sendDocument", NULL, &f, 60, r);
  if (!e)
    tg_pace_sent(t->pace, m->chat_id, NULL, ledger_now_ms());
  http_form_release(&f);
  return e;
}

/* Sends piece *part of the message (pieces of at most TG_CHUNK bytes, one
 * per call so that the chat's pacing applies between them); on success
 * *part moves on and *more says whether pieces remain. */
static enum err tg_send_text(struct tg *t, struct ledger *l, const struct outbox_msg *m,
                             int plain, size_t *part, int *more, struct tg_res *r)
{
  const char *s = m->text ? m->text : "";
  size_t n = strlen(s), off = 0, k;
  enum err e;

  *more = 0;
  tg_res_release(r);
  if (m->edit_key)     /* an edited message is one message */
    n = tg_split_len(s, n, TG_CHUNK);
  if (n == 0)
    return tg_send_piece(t, l, m, "(empty)", 7, 1, plain, r);
  for (size_t idx = 0;; idx++) {
    k = tg_split_len(s + off, n - off, TG_CHUNK);
    if (idx >= *part || off + k >= n)
      break;
    off += k;
  }
  if ((e = tg_send_piece(t, l, m, s + off, k, off + k >= n, plain, r)))
    return e;
  (*part)++;
  *more = off + k < n;
  return ERR_OK;
}

static int tg_parts(const char *s)
{
  size_t n = strlen(s), off = 0;
  int parts = 0;

  while (off < n) {
    off += tg_split_len(s + off, n - off, TG_CHUNK);
    parts++;
  }
  return parts;
}

/* Sends a long text as a file; falls back to text for good on a server
 * without sendDocument. */
static enum err tg_send_long(struct tg *t, struct ledger *l, const struct outbox_msg *m,
                             size_t *part, int *more, struct tg_res *r)
{
  enum err e = tg_send_document(t, m, r);

  *more = 0;
  if (e && (r->status == 404 || r->error_code == 404 ||
            (r->error_code == 400 && strstr(r->desc, "not found")))) {
    log_warn("telegram", "sendDocument unsupported (%s); long output goes as text", r->desc);
    t->no_document = 1;
    e = tg_send_text(t, l, m, 0, part, more, r);
  } else if (e == ERR_TOOBIG || e == ERR_INVAL || e == ERR_NOMEM) {   /* no upload built */
    e = tg_send_text(t, l, m, 0, part, more, r);
  }
  return e;
}

/* Records the outcome: done, the next piece pending, a retry, or a failure. */
static void tg_settle(struct ledger *l, const struct outbox_msg *m,
                      enum tg_outcome o, size_t part, int more, int64_t wait,
                      const struct tg_res *r)
{
  char pkey[64], num[32];

  snprintf(pkey, sizeof pkey, "tg.part.%" PRId64, m->id);
  snprintf(num, sizeof num, "%zu", part);
  if ((o == TG_DONE || o == TG_GONE) && more) {
    l->ops->kv_set(l, pkey, num);    /* still pending: the next piece when paced */
  } else if (o == TG_DONE || o == TG_GONE) {
    l->ops->outbox_done(l, m->id);
  } else if (o == TG_RETRY) {
    if (part)
      l->ops->kv_set(l, pkey, num);
    log_warn("telegram", "send to chat %" PRId64 " failed (%s); retry in %" PRId64 " ms",
             m->chat_id, r->desc, wait);
    l->ops->outbox_retry(l, m->id, ledger_now_ms() + wait, r->desc);
  } else {
    log_error("telegram", "giving up on a message to chat %" PRId64 ": %s", m->chat_id, r->desc);
    l->ops->outbox_fail(l, m->id, r->desc);
  }
}

static void tg_deliver(struct tg *t, struct ledger *l, const struct outbox_msg *m)
{
  struct tg_res r;
  char pkey[64], *pv = NULL;
  size_t part = 0;
  int64_t wait = 0;
  int more = 0;
  enum tg_outcome o;
  enum err e;
  int parts = tg_parts(m->text ? m->text : "");

  /* Which piece is next, when the text has several (one has no progress
   * to look up: a read less before most sends). */
  snprintf(pkey, sizeof pkey, "tg.part.%" PRId64, m->id);
  if (parts > 1 && l->ops->kv_get(l, pkey, &pv) == ERR_OK && pv)
    part = (size_t)strtoull(pv, NULL, 10);
  free(pv);
  memset(&r, 0, sizeof r);
  if (!m->edit_key && !t->no_document && part == 0 && parts > TG_DOC_PARTS)
    e = tg_send_long(t, l, m, &part, &more, &r);
  else
    e = tg_send_text(t, l, m, 0, &part, &more, &r);
  o = tg_classify(t, m, e, &r, &wait);
  if (o == TG_PLAIN) {
    log_warn("telegram", "formatting rejected (%s); sending as plain text", r.desc);
    e = tg_send_text(t, l, m, 1, &part, &more, &r);
    o = tg_classify(t, m, e, &r, &wait);
  }
  if (o == TG_GONE) {     /* the message to edit is gone: send it anew */
    e = tg_send_text(t, l, m, 0, &part, &more, &r);
    o = tg_classify(t, m, e, &r, &wait);
  }
  tg_settle(l, m, o, part, more, wait, &r);
  tg_res_release(&r);
}

/* An edit superseded by a later one with the same key is not sent. */
static int tg_superseded(const struct outbox_msg *v, size_t n, size_t i)
{
  if (!v[i].edit_key)
    return 0;
  for (size_t k = i + 1; k < n; k++)
    if (v[k].edit_key && v[k].chat_id == v[i].chat_id && !v[k].buttons_json &&
        !v[i].buttons_json && strcmp(v[k].edit_key, v[i].edit_key) == 0)
      return 1;
  return 0;
}

/* One pass; *left counts the messages still due, *had those that were due at
 * all (the outbox was not idle), and the result is how long
 * the sender may sleep before the first of them can go. */
static int64_t tg_send_round(struct tg *t, struct ledger *l, size_t *left, size_t *had)
{
  struct outbox_msg *v = NULL;
  size_t n = 0;
  int64_t blocked[TG_BATCH], wait = TG_IDLE_POLL_MS;
  size_t nb = 0, moved = 0;

  *left = *had = 0;
  if (l->ops->outbox_pending(l, "telegram", ledger_now_ms(), TG_BATCH, &v, &n))
    return wait;
  *had = n;
  for (size_t i = 0; i < n; i++) {
    int skip = 0;
    int64_t w;
    for (size_t b = 0; b < nb; b++)
      skip |= blocked[b] == v[i].chat_id;
    if (!skip && tg_superseded(v, n, i)) {
      l->ops->outbox_done(l, v[i].id);
      moved++;
      continue;
    }
    if (skip || (w = tg_pace_wait(t->pace, v[i].chat_id, v[i].edit_key, ledger_now_ms())) > 0) {
      if (!skip && nb < TG_BATCH) {
        blocked[nb++] = v[i].chat_id;   /* keep the chat's order */
        wait = w < wait ? w : wait;
      }
      (*left)++;
      continue;
    }
    tg_deliver(t, l, &v[i]);
    moved++;
  }
  if (n == TG_BATCH && moved > 0)
    wait = 0;     /* more may be due behind these; if all were held, wait */
  outbox_list_free(v, n);
  return wait;
}

/* glibc keeps freed heap (start-up, a burst of messages) for reuse; a bot
 * idles most of its life, so once the outbox has been empty for a while the
 * sender hands free pages back (malloc_trim also releases whole free pages
 * inside the heap, not only its top), its page cache first (the other
 * threads give theirs back when they go idle).  Once per quiet spell. */
static void tg_trim_when_idle(struct ledger *l, size_t had, int64_t *busy_at, int *trimmed)
{
  int64_t now = ledger_now_ms();

  if (had) {
    *busy_at = now;
    *trimmed = 0;
    return;
  }
#ifdef __GLIBC__
  if (!*trimmed && now - *busy_at >= TG_TRIM_IDLE_MS) {
    ledger_release_memory(l);
    malloc_trim(0);
    *trimmed = 1;
  }
#else
  (void)l;
  (void)trimmed;
#endif
}

static void *tg_sender_main(void *arg)
{
  struct tg *t = arg;
  struct ledger *l = NULL;
  char err[256];
  uint64_t seen = 0;

  if (tg_http_init(&t->out, t->cfg)) {
    log_error("telegram", "sender: out of memory");
    tg_http_release(&t->out);
    return NULL;
  }
  if (tg_pace_new(t->cfg->telegram_rate_global_per_s, t->cfg->telegram_rate_chat_per_s,
                  t->cfg->telegram_rate_group_per_min, &t->pace)) {
    log_error("telegram", "sender: bad rate limits");
    tg_http_release(&t->out);
    return NULL;
  }
  if (ledger_open(t->cfg->database_url, &l, err, sizeof err)) {
    log_error("telegram", "sender cannot open the ledger: %s", err);
    tg_http_release(&t->out);
    tg_pace_free(t->pace);
    t->pace = NULL;
    return NULL;
  }
  srand((unsigned)ledger_now_ms());
  tg_set_commands(&t->out);
  int64_t busy_at = ledger_now_ms();
  int trimmed = 0;
  for (;;) {
    size_t left, had;
    int64_t wait = tg_send_round(t, l, &left, &had);
    tg_trim_when_idle(l, had, &busy_at, &trimmed);
    if (t->sender_stop && (left == 0 || ledger_now_ms() >= t->flush_deadline))
      break;
    if (t->sender_stop && wait > t->flush_deadline - ledger_now_ms())
      wait = t->flush_deadline - ledger_now_ms();
    if (wait > 0 && tg_pace_wait_any(t->pace, ledger_now_ms()) >= wait)
      tg_sleep_ms(wait);    /* nothing can go before then: new messages need not wake us */
    else if (wait > 0)
      ledger_outbox_wait(&seen, (int)wait);
  }
  ledger_close(l);
  tg_http_release(&t->out);
  tg_pace_free(t->pace);
  t->pace = NULL;
  return NULL;
}

/* ---- poller ------------------------------------------------------------- */

static void tg_answer_callback(struct tg *t, const char *id, const char *text)
{
  json_object *b = json_object_new_object();
  struct tg_res r;

  json_object_object_add(b, "callback_query_id", json_object_new_string(id));
  if (text && *text)
    json_object_object_add(b, "text", json_object_new_string(text));
  if (tg_call(&t->http, "answerCallbackQuery", b, NULL, 15, &r))
    log_warn("telegram", "answerCallbackQuery failed: %s", r.desc);
  tg_res_release(&r);
  json_object_put(b);
}

static enum err tg_store_offset(struct ledger *l, int64_t next)
{
  char num[32];

  snprintf(num, sizeof num, "%" PRId64, next);
  return l->ops->kv_set(l, "telegram.offset", num);
}

/* "typing…" while a task is planned; dropped for good if unsupported. */
static void tg_typing(struct tg *t, int64_t chat)
{
  json_object *b;
  struct tg_res r;

  if (t->no_typing)
    return;
  b = json_object_new_object();
  json_object_object_add(b, "chat_id", json_object_new_int64(chat));
  json_object_object_add(b, "action", json_object_new_string("typing"));
  if (tg_call(&t->http, "sendChatAction", b, NULL, 5, &r) && r.root &&
      r.error_code != 429 && r.error_code < 500) {
    log_warn("telegram", "sendChatAction unsupported (%s); no typing indicator", r.desc);
    t->no_typing = 1;
  }
  tg_res_release(&r);
  json_object_put(b);
}

/* Feeds one parsed update to the conversation manager (inside the caller's
 * transaction).  ERR_OK also for an update that is skipped. */
static enum err tg_route(struct tg *t, struct conv *c, const struct tg_update *u, enum err pe,
                         struct conv_out *out)
{
  struct conv_in in = {0};

  memset(out, 0, sizeof *out);
  if (pe != ERR_OK) {
    log_info("telegram", "skipping update %" PRId64 " (%s)", u->update_id, err_str(pe));
    return ERR_OK;
  }
  in.channel = "telegram";
  in.chat_id = u->chat_id;
  in.user_id = u->user_id;
  in.user_name = u->user_name;
  in.text = u->kind == TG_UPD_MESSAGE ? u->text : NULL;
  in.callback_data = u->kind == TG_UPD_CALLBACK ? u->data : NULL;
  in.bot_name = t->username[0] ? t->username : NULL;
  return conv_handle(c, &in, out);
}

/* Handles one update: its effects and the new offset in one transaction.
 * An update whose handling fails is rolled back and skipped (logged). */
static void tg_handle(struct tg *t, struct conv *c, struct ledger *l, json_object *o,
                      int64_t *offset)
{
  struct tg_update u;
  struct conv_out out;
  enum err pe = tg_update_parse(o, &u), e;

  if (pe == ERR_PARSE && u.update_id <= 0) {
    log_warn("telegram", "skipping an update without update_id");
    return;
  }
  if (u.update_id < *offset) {
    log_debug("telegram", "duplicate update %" PRId64 " ignored", u.update_id);
    return;
  }
  if ((e = l->ops->begin(l)))
    return;
  if ((e = tg_route(t, c, &u, pe, &out))) {
    log_error("telegram", "update %" PRId64 " failed (%s); skipped", u.update_id, l->errmsg);
    l->ops->rollback(l);
    if (l->ops->begin(l))
      return;
  }
  if (tg_store_offset(l, u.update_id + 1) || l->ops->commit(l)) {
    l->ops->rollback(l);
    return;
  }
  ledger_outbox_ring();
  *offset = u.update_id + 1;
  if (pe == ERR_OK && u.kind == TG_UPD_CALLBACK)
    tg_answer_callback(t, u.callback_id, out.callback_answer);
}

struct tg_answer {
  const char *id;                   /* points into the batch's json */
  char text[200];
};

/* The batch in one transaction: every update's effects and the offset past
 * the last one commit together (one disk sync per batch).  On success
 * *offset moves and ans[0..*na) holds the callback queries to answer. */
static enum err tg_batch_tx(struct tg *t, struct conv *c, struct ledger *l, json_object *arr,
                            int64_t *offset, struct tg_answer *ans, size_t *na)
{
  size_t n = json_object_array_length(arr);
  int64_t next = *offset;
  enum err e;

  *na = 0;
  if ((e = l->ops->begin(l)))
    return e;
  for (size_t i = 0; i < n && !e; i++) {
    struct tg_update u;
    struct conv_out out;
    enum err pe = tg_update_parse(json_object_array_get_idx(arr, i), &u);
    if ((pe == ERR_PARSE && u.update_id <= 0) || u.update_id < next)
      continue;        /* no id, or a duplicate: nothing to store */
    e = tg_route(t, c, &u, pe, &out);
    next = u.update_id + 1;
    if (!e && pe == ERR_OK && u.kind == TG_UPD_CALLBACK) {
      ans[*na].id = u.callback_id;
      memcpy(ans[(*na)++].text, out.callback_answer, sizeof out.callback_answer);
    }
  }
  if (e || (next > *offset && (e = tg_store_offset(l, next))) || (e = l->ops->commit(l))) {
    l->ops->rollback(l);
    return e;
  }
  *offset = next;
  return ERR_OK;
}

/* Handles a getUpdates batch.  If any update of a batch fails, the whole
 * batch is rolled back and replayed one update per transaction, so one bad
 * update cannot take the others with it.  Callback queries are answered
 * after the commit. */
static void tg_handle_batch(struct tg *t, struct conv *c, struct ledger *l, json_object *arr,
                            int64_t *offset)
{
  size_t n = json_object_array_length(arr), na = 0;
  struct tg_answer *ans = n > 1 ? calloc(n, sizeof *ans) : NULL;

  if (ans && tg_batch_tx(t, c, l, arr, offset, ans, &na) == ERR_OK) {
    ledger_outbox_ring();
    for (size_t i = 0; i < na; i++)
      tg_answer_callback(t, ans[i].id, ans[i].text);
  } else {
    for (size_t i = 0; i < n; i++)
      tg_handle(t, c, l, json_object_array_get_idx(arr, i), offset);
  }
  free(ans);
}

/* "typing…" for each /task in a batch, before the (longer) planning. */
static void tg_batch_typing(struct tg *t, json_object *arr, int64_t offset)
{
  size_t n = json_object_array_length(arr);

  for (size_t i = 0; i < n; i++) {
    struct tg_update u;
    if (tg_update_parse(json_object_array_get_idx(arr, i), &u) == ERR_OK &&
        u.update_id >= offset && u.kind == TG_UPD_MESSAGE &&
        (strncmp(u.text, "/task", 5) == 0 ||
         (u.text[0] && u.text[0] != '/' && strcmp(t->cfg->llm_provider, "offline") != 0)) &&
        cfg_is_allowed(t->cfg, u.user_id))
      tg_typing(t, u.chat_id);
  }
}

static json_object *tg_poll_body(int64_t offset, int timeout_s)
{
  json_object *b = json_object_new_object(), *a = json_object_new_array();

  json_object_object_add(b, "offset", json_object_new_int64(offset));
  json_object_object_add(b, "limit", json_object_new_int(100));
  json_object_object_add(b, "timeout", json_object_new_int(timeout_s));
  json_object_array_add(a, json_object_new_string("message"));
  json_object_array_add(a, json_object_new_string("edited_message"));
  json_object_array_add(a, json_object_new_string("callback_query"));
  json_object_object_add(b, "allowed_updates", a);
  return b;
}

/* getUpdates from offset on the poller's connection. */
static enum err tg_get_updates(struct tg *t, int64_t offset, struct tg_res *r)
{
  int timeout_s = t->cfg->telegram_poll_timeout_s;
  json_object *body = tg_poll_body(offset, timeout_s);
  enum err e = tg_call(&t->http, "getUpdates", body, NULL, timeout_s + 15L, r);

  json_object_put(body);
  return e;
}

/* Handles the outcome e, *r of a getUpdates from *offset sent at t0 (ms):
 * the batch, or the wait before the next try; releases *r. */
static void tg_poll_done(struct tg *t, struct conv *c, struct ledger *l, int64_t *offset,
                         int *fails, enum err e, struct tg_res *r, int64_t t0)
{
  size_t n = 0;

  if (e == ERR_CANCELLED) {
    tg_res_release(r);
    return;
  }
  if (e || !r->result || !json_object_is_type(r->result, json_type_array)) {
    int64_t wait = r->retry_after > 0 ? r->retry_after * 1000LL
                                      : (500LL << (*fails < 5 ? *fails : 5)) + rand() % 250;
    log_warn("telegram", "getUpdates failed (%s); retry in %" PRId64 " ms",
             r->desc[0] ? r->desc : err_str(e), wait);
    (*fails)++;
    tg_res_release(r);
    tg_sleep_ms(wait);
    return;
  }
  *fails = 0;
  n = json_object_array_length(r->result);
  tg_batch_typing(t, r->result, *offset);
  tg_handle_batch(t, c, l, r->result, offset);
  tg_res_release(r);
  if (n == 0 && ledger_now_ms() - t0 < TG_MIN_POLL_MS)
    tg_sleep_ms(TG_MIN_POLL_MS - (ledger_now_ms() - t0));
}

static void tg_poll_once(struct tg *t, struct conv *c, struct ledger *l, int64_t *offset,
                         int *fails)
{
  int64_t t0 = ledger_now_ms();
  struct tg_res r;
  enum err e;

  /* While the poll waits, another thread's commit (the sender's, a job's)
   * would empty the page cache anyway. */
  ledger_release_memory(l);
  e = tg_get_updates(t, *offset, &r);
  tg_poll_done(t, c, l, offset, fails, e, &r, t0);
}

static enum err tg_offset(struct ledger *l, int64_t *offset)
{
  char *v = NULL;
  enum err e = l->ops->kv_get(l, "telegram.offset", &v);

  *offset = e == ERR_OK && v ? strtoll(v, NULL, 10) : 0;
  free(v);
  return e == ERR_NOTFOUND ? ERR_OK : e;
}

/* Has the opener poll from offset once getMe has answered (the first
 * request wins). */
static void tg_ahead_from(struct tg *t, int64_t offset, volatile sig_atomic_t *stop)
{
  if (!t->opening)
    return;
  pthread_mutex_lock(&t->omu);
  if (!t->ahead) {
    t->ahead_stop = stop;
    t->ahead_offset = offset;
    t->ahead = 1;
    pthread_cond_broadcast(&t->ocv);
  }
  pthread_mutex_unlock(&t->omu);
}

void tg_poll_first(struct tg *t, volatile sig_atomic_t *stop)
{
  tg_ahead_from(t, 0, stop);
}

void tg_poll_ahead(struct tg *t, struct ledger *l, volatile sig_atomic_t *stop)
{
  int64_t offset;

  if (t->opening && !tg_offset(l, &offset))
    tg_ahead_from(t, offset, stop);
}

int tg_run(struct tg *t, struct conv *c, struct ledger *l, volatile sig_atomic_t *stop)
{
  int64_t offset = 0;
  int fails = 0;

  tg_offset(l, &offset);
  if (pthread_create(&t->sender, NULL, tg_sender_main, t) != 0) {
    log_error("telegram", "cannot start the sender thread");
    return 1;
  }
  t->sender_started = 1;
  log_info("telegram", "polling as %s from offset %" PRId64, t->bot_name, offset);
  ledger_release_memory(l);   /* what start-up read, while the first poll waits */
  tg_opener_join(t);
  t->http.stop = stop;
  if (t->ahead_done) {   /* the first poll, sent while skynet started */
    t->ahead_done = 0;
    if (t->ahead_offset == offset)   /* released by tg_poll_done */
      tg_poll_done(t, c, l, &offset, &fails, t->ahead_err, &t->ahead_res, t->ahead_t0);
    else
      tg_res_release(&t->ahead_res);
  }
  while (!*stop)
    tg_poll_once(t, c, l, &offset, &fails);
  t->flush_deadline = ledger_now_ms() + (int64_t)t->cfg->shutdown_grace_s * 1000;
  t->sender_stop = 1;
  ledger_outbox_ring();
  pthread_join(t->sender, NULL);
  t->sender_started = 0;
  return 0;
}
