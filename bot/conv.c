/* bot/conv.c — command routing, access control and replies. */
#include "conv.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "engine/buf.h"
#include "engine/log.h"
#include "engine/logstore.h"
#include "engine/persona.h"
#include "engine/sentinel.h"

#define TEXT_MAX 4000           /* a request longer than this is refused */
#define RATE_SLOTS 256          /* users tracked by the command rate limit */
#define RATE_BURST 10           /* commands a user may send at once */
#define RATE_PER_MIN 30         /* and per minute after that */
#define REPLY_MAX (64 * 1024)

struct conv {
  const struct cfg *cfg;
  const struct registry *reg;
  struct orch *orch;
  struct ledger *l;
  struct sentinel *sentinel;
  struct assistant *assistant;  /* NULL: offline planner, canned chat */
  struct rate {
    int64_t user_id;
    double tokens;
    int64_t last_ms;
    int warned;
  } rates[RATE_SLOTS];         /* a token bucket per recent user */
};

struct req {
  struct conv *c;
  const struct conv_in *in;
  struct conv_out *out;
  char actor[64];
};

enum err conv_new(const struct cfg *cfg, const struct registry *reg,
                  struct orch *o, struct ledger *l, struct conv **out)
{
  struct conv *c = calloc(1, sizeof *c);

  *out = NULL;
  if (!c)
    return ERR_NOMEM;
  c->cfg = cfg;
  c->reg = reg;
  c->orch = o;
  c->l = l;
  *out = c;
  return ERR_OK;
}

void conv_free(struct conv *c)
{
  free(c);
}

void conv_set_sentinel(struct conv *c, struct sentinel *s)
{
  c->sentinel = s;
}

void conv_set_assistant(struct conv *c, struct assistant *a)
{
  c->assistant = a;
}

/* ---- replies ------------------------------------------------------------ */

/* Every reply: to the outbox (secrets redacted there) and to the chat's
 * history, which the model sees as context. */
static enum err put_reply(struct ledger *l, const char *channel, int64_t chat_id,
                          const char *text, const char *buttons, const char *edit_key,
                          int64_t job_id)
{
  struct outbox_msg m = {0};
  enum err e;

  m.channel = (char *)channel;
  m.chat_id = chat_id;
  m.job_id = job_id;
  m.text = (char *)text;
  m.buttons_json = (char *)buttons;
  m.edit_key = (char *)edit_key;
  if ((e = ledger_outbox_put(l, &m, NULL)))
    return e;
  char *safe = log_redact(text);
  e = l->ops->msg_append(l, channel, chat_id, "assistant", safe ? safe : "");
  free(safe);
  return e;
}

enum err conv_say(struct ledger *l, const char *channel, int64_t chat_id, const char *text)
{
  return put_reply(l, channel, chat_id, text, NULL, NULL, 0);
}

static enum err reply_full(struct req *r, const char *text, const char *buttons,
                           const char *edit_key, int64_t job_id)
{
  return put_reply(r->c->l, r->in->channel, r->in->chat_id, text, buttons, edit_key, job_id);
}

static enum err reply(struct req *r, const char *text)
{
  return reply_full(r, text, NULL, NULL, 0);
}

/* Replies with persona template `key`: SAY(r, "denied", "reason", why). */
#define SAY(r, ...) say_text((r), persona_render(persona_current(), __VA_ARGS__, NULL))

static enum err say_text(struct req *r, char *text)
{
  enum err e;

  if (!text)
    return ERR_NOMEM;
  e = reply(r, text);
  free(text);
  return e;
}

/* The short answer to a button press, from persona template `key`. */
static void answer(struct conv_out *out, const char *key, ...) __attribute__((sentinel));
static void answer(struct conv_out *out, const char *key, ...)
{
  va_list ap;
  char *t;

  va_start(ap, key);
  t = persona_vrender(persona_current(), key, ap);
  va_end(ap);
  snprintf(out->callback_answer, sizeof out->callback_answer, "%s", t ? t : "");
  free(t);
}

/* A persona heading ("Providers:") appended after prefix. */
static void heading(struct buf *b, const char *prefix, const char *key)
{
  char *t = persona_render(persona_current(), key, NULL);

  buf_printf(b, "%s%s", prefix, t ? t : key);
  free(t);
}

static const char *idstr(int64_t id, char out[24])
{
  snprintf(out, 24, "%" PRId64, id);
  return out;
}

/* ---- transactions ------------------------------------------------------ */

/* Starts a transaction, or joins the channel's own (a channel may hold one
 * to store an update's effects with its offset).  *own says who commits. */
static enum err tx_join(struct ledger *l, int *own)
{
  enum err e = l->ops->begin(l);

  *own = e == ERR_OK;
  return e == ERR_STATE ? ERR_OK : e;
}

static enum err tx_finish(struct ledger *l, int own, enum err e)
{
  if (!own)
    return e;
  if (e) {
    l->ops->rollback(l);
    return e;
  }
  return l->ops->commit(l);
}

/* ---- access ------------------------------------------------------------- */

static int is_allowed(const struct req *r)
{
  return r->in->trusted || cfg_is_allowed(r->c->cfg, r->in->user_id);
}

static int is_admin(const struct req *r)
{
  return r->in->trusted || cfg_is_admin(r->c->cfg, r->in->user_id);
}

/* SPEC §3: with no admins, allowed users approve WRITE and nobody ADMIN.
 * A READ_ONLY job only waits when proposed in conversation: any allowed
 * user may let it run. */
static int may_approve(const struct req *r, enum risk risk)
{
  if (is_admin(r))
    return risk <= RISK_ADMIN;
  return (risk == RISK_READ_ONLY || (risk == RISK_WRITE && r->c->cfg->n_admins == 0)) &&
         is_allowed(r);
}

/* Token bucket per user (the console operator is not limited).  Returns 1
 * when the message may go on; the first refusal of a burst says why. */
static int rate_ok(struct req *r)
{
  struct rate *rt = &r->c->rates[(uint64_t)r->in->user_id % RATE_SLOTS];
  int64_t now = ledger_now_ms();

  if (r->in->trusted)
    return 1;
  if (rt->user_id != r->in->user_id || rt->last_ms == 0) {
    *rt = (struct rate){r->in->user_id, RATE_BURST, now, 0};
  } else {
    rt->tokens += (double)(now - rt->last_ms) * RATE_PER_MIN / 60000.0;
    if (rt->tokens > RATE_BURST)
      rt->tokens = RATE_BURST;
    rt->last_ms = now;
  }
  if (rt->tokens >= 1.0) {
    rt->tokens -= 1.0;
    rt->warned = 0;
    return 1;
  }
  return 0;
}

/* Nothing is stored for a stranger but a counter. */
static enum err refuse(struct req *r)
{
  char key[64], *v = NULL, num[32];
  long n = 0;
  struct outbox_msg m = {0};

  snprintf(key, sizeof key, "refused:%" PRId64, r->in->user_id);
  if (r->c->l->ops->kv_get(r->c->l, key, &v) == ERR_OK)
    n = strtol(v, NULL, 10);
  free(v);
  snprintf(num, sizeof num, "%ld", n + 1);
  r->c->l->ops->kv_set(r->c->l, key, num);
  r->out->refused = 1;
  answer(r->out, "button_not_allowed", NULL);
  log_info("conv", "refused user %" PRId64 " on %s", r->in->user_id, r->in->channel);
  m.channel = (char *)r->in->channel;
  m.chat_id = r->in->chat_id;
  if (!(m.text = persona_render(persona_current(), "refusal", NULL)))
    return ERR_NOMEM;
  enum err e = ledger_outbox_put(r->c->l, &m, NULL);
  free(m.text);
  return e;
}

/* ---- commands ----------------------------------------------------------- */

static int parse_id(const char *s, int64_t *id)
{
  char *end;
  long long v;

  while (s && (*s == ' ' || *s == '#'))
    s++;
  if (!s || !isdigit((unsigned char)*s))
    return 0;
  errno = 0;
  v = strtoll(s, &end, 10);
  while (*end == ' ')
    end++;
  if (errno || v <= 0 || *end)
    return 0;
  *id = v;
  return 1;
}

static enum err cmd_help(struct req *r, const char *arg)
{
  (void)arg;
  return SAY(r, "help");
}

static void buttons_for(int64_t id, char *out, size_t n)
{
  snprintf(out, n,
           "[[{\"text\":\"Approve\",\"data\":\"approve:%" PRId64 "\"},"
           "{\"text\":\"Deny\",\"data\":\"deny:%" PRId64 "\"}]]", id, id);
}

enum err conv_announce(struct ledger *l, const char *channel, int64_t chat_id,
                       const struct submit_res *s, int proposal)
{
  const struct persona *p = persona_current();
  struct buf b = BUF_INIT(REPLY_MAX);
  char buttons[200], key[64], ids[24], *t = NULL, *t2 = NULL;
  const char *steps = s->plan_text ? s->plan_text : "", *summary = s->summary ? s->summary : "";
  int waits = s->state == JOB_AWAITING_APPROVAL;
  enum err e = ERR_NOMEM;

  idstr(s->job_id, ids);
  if (s->state == JOB_FAILED) {
    t = persona_render(p, "plan_failed", "id", ids, "reason", s->reason, NULL);
  } else if (proposal && waits) {
    t = persona_render(p, "proposal", "id", ids, "risk", risk_name(s->risk), "summary", summary,
                       "steps", steps, NULL);
  } else {
    t = persona_render(p, "plan", "id", ids, "state", job_state_name(s->state), "risk",
                       risk_name(s->risk), "summary", summary, "steps", steps, NULL);
    if (s->state == JOB_DENIED)
      t2 = persona_render(p, "denied", "id", ids, "reason", s->reason, NULL);
    else if (waits)
      t2 = persona_render(p, "approval", "id", ids, "risk", risk_name(s->risk), "reason",
                          s->reason, NULL);
  }
  if (!t)
    goto out;
  buf_appends(&b, t);
  if (t2)
    buf_printf(&b, "\n%s", t2);
  if (waits) {
    buttons_for(s->job_id, buttons, sizeof buttons);
    snprintf(key, sizeof key, "job:%" PRId64 ":plan", s->job_id);
    e = put_reply(l, channel, chat_id, buf_str(&b), buttons, key, s->job_id);
  } else {
    e = put_reply(l, channel, chat_id, buf_str(&b), NULL, NULL, s->job_id);
  }
out:
  free(t);
  free(t2);
  buf_release(&b);
  return e;
}

static enum err reply_submitted(struct req *r, const struct submit_res *s)
{
  return conv_announce(r->c->l, r->in->channel, r->in->chat_id, s, 0);
}

static enum err cmd_task(struct req *r, const char *arg)
{
  struct submit_req sr = {0};
  struct submit_res res;
  enum err e;

  if (!arg || !*arg)
    return SAY(r, "usage_task");
  sr.channel = r->in->channel;
  sr.chat_id = r->in->chat_id;
  sr.user_id = r->in->user_id;
  sr.text = arg;
  sr.actor = r->actor;
  /* The job and its announcement land together, so the plan is always shown
   * before any progress of the job. */
  int own;
  if ((e = tx_join(r->c->l, &own)))
    return e;
  if (r->c->assistant) {
    /* A model takes seconds: store the job, plan it on the assistant's thread. */
    int64_t id;
    char ids[24];
    if (!(e = orch_create(r->c->orch, r->c->l, &sr, &id)))
      e = SAY(r, "planning", "id", idstr(id, ids));
    if ((e = tx_finish(r->c->l, own, e)))
      return e;
    assistant_kick(r->c->assistant);
    return ERR_OK;
  }
  if (!(e = orch_submit(r->c->orch, r->c->l, &sr, &res)))
    e = reply_submitted(r, &res);
  submit_res_release(&res);
  if ((e = tx_finish(r->c->l, own, e)))
    return e;
  orch_wake(r->c->orch);
  return ERR_OK;
}

static void describe_transitions(struct req *r, int64_t id, struct buf *b)
{
  struct transition *t = NULL;
  size_t n = 0;

  if (r->c->l->ops->job_transitions(r->c->l, id, &t, &n))
    return;
  heading(b, "\n", "heading_history");
  for (size_t i = 0; i < n; i++) {
    buf_printf(b, "\n  %s → %s by %s", t[i].has_from ? job_state_name(t[i].from) : "·",
               job_state_name(t[i].to), t[i].actor);
    if (t[i].reason)
      buf_printf(b, " (%s)", t[i].reason);
  }
  transition_list_free(t, n);
}

static int job_visible(const struct req *r, const struct job *j)
{
  return is_admin(r) || (strcmp(j->channel, r->in->channel) == 0 &&
                         j->chat_id == r->in->chat_id);
}

/* What planning this job with the model cost, when it did. */
static void job_tokens(struct req *r, int64_t id, struct buf *b)
{
  struct usage_filter f = {0, NULL, 0, id};
  int64_t p = 0, c = 0;
  char n[32], *t;

  if (r->c->l->ops->usage_sum(r->c->l, &f, &p, &c) || p + c == 0)
    return;
  snprintf(n, sizeof n, "%" PRId64, p + c);
  if ((t = persona_render(persona_current(), "job_tokens", "tokens", n, NULL)))
    buf_printf(b, "\n%s", t);
  free(t);
}

static enum err status_one(struct req *r, int64_t id)
{
  char ids[24];
  struct buf b = BUF_INIT(REPLY_MAX);
  struct job j;
  char *res;
  enum err e;

  if ((e = r->c->l->ops->job_get(r->c->l, id, &j)) == ERR_NOTFOUND || (!e && !job_visible(r, &j))) {
    job_release(&j);
    return SAY(r, "no_job", "id", idstr(id, ids));
  }
  if (e)
    return e;
  /* The log store's tail is live while the job runs and spans every step;
   * a quick job's log is in the ledger. */
  char *tail;
  if (logstore_tail_job(r->c->l, r->c->cfg->home, id, 20, 1500, &tail)) {
    job_release(&j);
    return ERR_DB;
  }
  if (tail && *tail) {
    free(j.output_tail);
    j.output_tail = tail;
    tail = NULL;
  }
  free(tail);
  res = orch_format_result(&j, 1500);
  buf_appends(&b, res);
  char *task = persona_render(persona_current(), "status_task", "text", j.text, "risk",
                              risk_name(j.risk), NULL);
  buf_printf(&b, "\n%s", task ? task : "");
  free(task);
  orch_format_artifacts(r->c->l, id, &b);
  job_tokens(r, id, &b);
  describe_transitions(r, id, &b);
  e = reply(r, buf_str(&b));
  free(res);
  buf_release(&b);
  job_release(&j);
  return e;
}

static enum err list_jobs(struct req *r, const char *title, size_t limit)
{
  struct job_filter f = {r->in->channel, r->in->chat_id, 1, JOB_CREATED, limit};
  struct buf b = BUF_INIT(REPLY_MAX);
  struct job *v = NULL;
  size_t n = 0;
  enum err e;

  if ((e = r->c->l->ops->job_list(r->c->l, &f, &v, &n)))
    return e;
  char *t = persona_render(persona_current(), title, NULL);
  buf_appends(&b, t ? t : "");
  free(t);
  if (!n && (t = persona_render(persona_current(), "no_jobs", NULL))) {
    buf_printf(&b, "\n%s", t);
    free(t);
  }
  for (size_t i = 0; i < n; i++)
    buf_printf(&b, "\n#%" PRId64 " %s · %.60s", v[i].id, job_state_name(v[i].state),
               v[i].summary && *v[i].summary ? v[i].summary : v[i].text);
  e = reply(r, buf_str(&b));
  job_list_free(v, n);
  buf_release(&b);
  return e;
}

/* The model and what it cost today: all chats, this chat. */
static enum err model_status(struct req *r)
{
  struct usage_filter all = {assistant_day_start_ms(), NULL, 0, 0};
  struct usage_filter mine = {assistant_day_start_ms(), r->in->channel, r->in->chat_id, 0};
  int64_t p = 0, c = 0, mp = 0, mc = 0;
  char today[32], chat[32], budget[32];
  enum err e;

  if ((e = r->c->l->ops->usage_sum(r->c->l, &all, &p, &c)) ||
      (e = r->c->l->ops->usage_sum(r->c->l, &mine, &mp, &mc)))
    return e;
  snprintf(today, sizeof today, "%" PRId64, p + c);
  snprintf(chat, sizeof chat, "%" PRId64, mp + mc);
  if (r->c->cfg->llm_daily_token_budget > 0)
    snprintf(budget, sizeof budget, "%d", r->c->cfg->llm_daily_token_budget);
  else
    snprintf(budget, sizeof budget, "none");
  return SAY(r, "model_status", "model", assistant_model(r->c->assistant), "today", today,
             "chat", chat, "budget", budget);
}

static enum err cmd_status(struct req *r, const char *arg)
{
  int64_t id;

  if (arg && *arg) {
    if (!parse_id(arg, &id))
      return SAY(r, "usage", "usage", "/status [id], e.g. /status 4");
    return status_one(r, id);
  }
  enum err e = list_jobs(r, "status_header", 5);
  if (e || !r->c->assistant)
    return e;
  return model_status(r);
}

static enum err cmd_list(struct req *r, const char *arg)
{
  (void)arg;
  return list_jobs(r, "list_header", 20);
}

static enum err decide_and_reply(struct req *r, int64_t id, int approve);

/* Shared by /approve, /deny and the buttons. */
static enum err decide(struct req *r, int64_t id, int approve)
{
  char ids[24];
  struct job j;
  enum err e;

  if ((e = r->c->l->ops->job_get(r->c->l, id, &j)) == ERR_NOTFOUND || (!e && !job_visible(r, &j))) {
    job_release(&j);
    answer(r->out, "button_no_job", "id", idstr(id, ids), NULL);
    return SAY(r, "no_job", "id", idstr(id, ids));
  }
  if (e)
    return e;
  if (j.state != JOB_AWAITING_APPROVAL) {
    answer(r->out, "button_not_awaiting", "id", idstr(id, ids), "state",
           job_state_name(j.state), NULL);
    e = SAY(r, "not_awaiting", "id", idstr(id, ids), "state", job_state_name(j.state));
  } else if (approve && !may_approve(r, j.risk)) {
    answer(r->out, "button_may_not_approve", "id", idstr(id, ids), "risk", risk_name(j.risk),
           NULL);
    e = SAY(r, "may_not_approve", "id", idstr(id, ids), "risk", risk_name(j.risk), "who",
            j.risk == RISK_ADMIN ? "an admin" : "an admin or an allowed user");
  } else if (!approve && !is_allowed(r)) {
    e = SAY(r, "may_not_deny", "id", idstr(id, ids));
  } else if ((e = decide_and_reply(r, id, approve)) == ERR_STATE) {
    e = SAY(r, "no_longer_awaiting", "id", idstr(id, ids));
  }
  job_release(&j);
  return e;
}

/* The decision and its announcement land in one transaction, so the outcome
 * is always shown before any progress of the job. */
static enum err decide_and_reply(struct req *r, int64_t id, int approve)
{
  struct ledger *l = r->c->l;
  char key[64], ids[24], *text;
  enum err e;
  int own;

  if ((e = tx_join(l, &own)))
    return e;
  if (!(e = orch_decide(r->c->orch, l, id, approve, r->actor))) {
    answer(r->out, approve ? "button_approved" : "button_denied", "id", idstr(id, ids), NULL);
    snprintf(key, sizeof key, "job:%" PRId64 ":plan", id);
    text = persona_render(persona_current(), approve ? "approved" : "denied_by",
                          "id", idstr(id, ids), "actor", r->actor, NULL);
    /* A button press edits the plan message to show the outcome. */
    e = text ? reply_full(r, text, NULL, r->in->callback_data ? key : NULL, id) : ERR_NOMEM;
    free(text);
  }
  if ((e = tx_finish(l, own, e)))
    return e;
  orch_wake(r->c->orch);
  return ERR_OK;
}

static enum err cmd_approve(struct req *r, const char *arg)
{
  int64_t id;

  if (!parse_id(arg, &id))
    return SAY(r, "usage", "usage", "/approve <id>");
  return decide(r, id, 1);
}

static enum err cmd_deny(struct req *r, const char *arg)
{
  int64_t id;

  if (!parse_id(arg, &id))
    return SAY(r, "usage", "usage", "/deny <id>");
  return decide(r, id, 0);
}

static enum err cmd_cancel(struct req *r, const char *arg)
{
  char ids[24];
  struct job j;
  int64_t id;
  enum err e;

  if (!parse_id(arg, &id))
    return SAY(r, "usage", "usage", "/cancel <id>");
  if ((e = r->c->l->ops->job_get(r->c->l, id, &j)) == ERR_NOTFOUND || (!e && !job_visible(r, &j))) {
    job_release(&j);
    return SAY(r, "no_job", "id", idstr(id, ids));
  }
  job_release(&j);
  if (e)
    return e;
  e = orch_cancel(r->c->orch, r->c->l, id, r->actor);
  if (e == ERR_STATE)
    return SAY(r, "already_ended", "id", idstr(id, ids));
  if (e)
    return e;
  return SAY(r, "cancelling", "id", idstr(id, ids));
}

/* The worker processes of the shared ledger, online first (at most 10). */
static void append_workers(struct req *r, struct buf *b)
{
  struct worker_rec *v = NULL;
  size_t n = 0;

  if (r->c->l->ops->worker_list(r->c->l, &v, &n) != ERR_OK || !n) {
    worker_list_free(v, n);
    return;
  }
  heading(b, "\n", "heading_workers");
  for (size_t i = 0; i < n && i < 10; i++)
    buf_printf(b, "\n%s %s%s%s · %d/%d busy · %s", v[i].id, v[i].state,
               v[i].reason ? " — " : "", v[i].reason ? v[i].reason : "", v[i].load,
               v[i].capacity, v[i].providers);
  if (n > 10)
    buf_printf(b, "\n… and %zu more", n - 10);
  worker_list_free(v, n);
}

static enum err cmd_providers(struct req *r, const char *arg)
{
  struct buf b = BUF_INIT(REPLY_MAX);
  enum err e;

  (void)arg;
  heading(&b, "", "heading_providers");
  for (size_t i = 0; i < r->c->reg->n; i++) {
    const struct registry_entry *re = &r->c->reg->v[i];
    struct exec_health h = {0, ""};
    struct sentinel_status st;
    int monitored = r->c->sentinel && sentinel_status(r->c->sentinel, re->name, &st) == ERR_OK &&
                    st.checks;
    /* The monitor's last check when there is one: this runs inside the
     * channel's transaction (on SQLite, the write lock), and a provider
     * that does not answer takes up to 10 s to say so. */
    if (monitored) {
      h.ok = st.last_ok;
      snprintf(h.detail, sizeof h.detail, "%s", st.detail);
    } else if (re->inst && re->inst->backend->health) {
      re->inst->backend->health(re->inst, &h);
    }
    buf_printf(&b, "\n%s (%s)%s: %s — %s", re->name, re->type,
               strcmp(re->name, r->c->reg->default_name) == 0 ? " default"
               : re->automatic ? " automatic, for WRITE steps" : "",
               re->inst ? (h.ok ? "up" : "down") : "unavailable",
               re->inst ? h.detail : re->error);
    if (monitored)
      buf_printf(&b, " · monitor: %s after %ld checks%s%s", st.up ? "up" : "DOWN", st.checks,
                 st.last_error[0] ? ", last error: " : "", st.last_error);
  }
  append_workers(r, &b);
  e = reply(r, buf_str(&b));
  buf_release(&b);
  return e;
}

static enum err cmd_memory(struct req *r, const char *arg)
{
  (void)arg;
  return SAY(r, "memory_unavailable");
}

static enum err cmd_initiative(struct req *r, const char *arg)
{
  (void)arg;
  return SAY(r, "initiative_unavailable");
}

/* Free text: the persona answers through the model on the assistant's
 * thread (the turn is stored with the update), else a canned pointer to /task. */
static enum err chat_reply(struct req *r, const char *text)
{
  enum err e;
  int own;

  if (!r->c->assistant)
    return SAY(r, "chat_offline");
  if ((e = tx_join(r->c->l, &own)))
    return e;
  e = r->c->l->ops->turn_put(r->c->l, r->in->channel, r->in->chat_id, r->in->user_id, text,
                             NULL);
  if ((e = tx_finish(r->c->l, own, e)))
    return e;
  assistant_kick(r->c->assistant);
  return ERR_OK;
}

static const struct command {
  const char *name;
  enum err (*fn)(struct req *r, const char *arg);
} commands[] = {
  {"start", cmd_help},     {"help", cmd_help},       {"task", cmd_task},
  {"status", cmd_status},  {"list", cmd_list},       {"cancel", cmd_cancel},
  {"approve", cmd_approve}, {"deny", cmd_deny},      {"memory", cmd_memory},
  {"providers", cmd_providers}, {"initiative", cmd_initiative},
};

/* "/task@bot args" → name "task", arg "args"; NULL if addressed elsewhere. */
static const struct command *find_command(const struct req *r, const char *text,
                                          const char **arg)
{
  size_t n = strcspn(text + 1, " \t\n@");
  const char *p = text + 1 + n;

  if (*p == '@') {
    size_t bn = strcspn(p + 1, " \t\n");
    const char *bot = r->in->bot_name;
    if (bot && (strlen(bot) != bn || strncasecmp(p + 1, bot, bn) != 0))
      return NULL;
    p += 1 + bn;
  }
  *arg = p + strspn(p, " \t\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strlen(commands[i].name) == n && strncasecmp(text + 1, commands[i].name, n) == 0)
      return &commands[i];
  return NULL;
}

static enum err handle_text(struct req *r)
{
  const char *text = r->in->text, *arg = NULL;
  const struct command *cmd;
  enum err e;

  if ((e = r->c->l->ops->msg_append(r->c->l, r->in->channel, r->in->chat_id, "user", text)))
    return e;
  if (text[0] != '/')
    return chat_reply(r, text);
  if (!(cmd = find_command(r, text, &arg))) {
    if (strchr(text, '@') && r->in->bot_name)
      return ERR_OK;   /* a command for another bot in a group */
  {
    char cmd[48];
    snprintf(cmd, sizeof cmd, "%.40s", text);
    return SAY(r, "unknown_command", "command", cmd);
  }
  }
  return cmd->fn(r, arg);
}

static enum err handle_callback(struct req *r)
{
  const char *d = r->in->callback_data;
  int64_t id;

  if (strncmp(d, "approve:", 8) == 0 && parse_id(d + 8, &id))
    return decide(r, id, 1);
  if (strncmp(d, "deny:", 5) == 0 && parse_id(d + 5, &id))
    return decide(r, id, 0);
  answer(r->out, "button_unknown", NULL);
  log_warn("conv", "unknown callback data from user %" PRId64, r->in->user_id);
  return ERR_OK;
}

enum err conv_handle(struct conv *c, const struct conv_in *in, struct conv_out *out)
{
  struct req r = {c, in, out, ""};

  memset(out, 0, sizeof *out);
  snprintf(r.actor, sizeof r.actor, "%s:%" PRId64, in->trusted ? "operator" : "user",
           in->user_id);
  if (!is_allowed(&r))
    return refuse(&r);
  if (!rate_ok(&r)) {
    struct rate *rt = &c->rates[(uint64_t)in->user_id % RATE_SLOTS];
    answer(out, "button_slow_down", NULL);
    if (rt->warned++)
      return ERR_OK;
    return SAY(&r, "rate_limited");
  }
  if (in->callback_data)
    return handle_callback(&r);
  if (!in->text || !*in->text)
    return ERR_OK;
  if (strlen(in->text) > TEXT_MAX)
  {
    char max[16];
    snprintf(max, sizeof max, "%d", TEXT_MAX);
    return SAY(&r, "too_long", "max", max);
  }
  return handle_text(&r);
}
