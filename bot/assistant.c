/* bot/assistant.c — planning and chat through the model, off the channel's
 * thread.  See assistant.h for the design. */
#include "assistant.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "conv.h"
#include "engine/buf.h"
#include "engine/log.h"
#include "engine/persona.h"
#include "engine/planner.h"
#include "providers/llm/llm.h"

#define POLL_MS 5000              /* work no kick announced (another process's) */
#define BATCH 8
#define HISTORY_FETCH 40
#define CONTEXT_MSGS 6            /* chat messages a plan request sees */
#define CHAT_MAX_TOKENS 600
#define SUMMARY_MAX_TOKENS 300
#define MSG_MAX 4000              /* bytes of one history message sent */
#define SUMMARY_KEY "chat:summary:"

static const char chat_rules[] =
    "\n\nYou are in a chat. Answer with one JSON object: {\"reply\": \"your answer\", "
    "\"task\": null}. When the user asks for operations work to be done (check, run, "
    "restart, deploy, clean up...), put a one-line description of that work in \"task\" "
    "instead of null; it will be planned and shown to them for approval, never run "
    "unasked. Never claim you ran anything. Keep replies short.";

static const char chat_schema[] =
    "{\"type\":\"object\",\"properties\":{\"reply\":{\"type\":\"string\"},"
    "\"task\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"reply\"]}";
static const char chat_schema_gemini[] =
    "{\"type\":\"OBJECT\",\"properties\":{\"reply\":{\"type\":\"STRING\"},"
    "\"task\":{\"type\":\"STRING\",\"nullable\":true}},\"required\":[\"reply\"]}";

struct assistant {
  const struct cfg *cfg;
  const struct registry *reg;
  struct orch *orch;
  struct llm *llm;
  struct ledger *l;
  const char **providers;       /* names, default first, NULL-terminated */
  char model[160];
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int kicked;
  atomic_int stop;
};

int64_t assistant_day_start_ms(void)
{
  time_t now = time(NULL);
  return ((int64_t)now - (int64_t)now % 86400) * 1000;
}

const char *assistant_model(const struct assistant *a)
{
  return a->model;
}

/* ---- budget and accounting ----------------------------------------------- */

/* 1 when today's budget is spent; *used gets today's tokens. */
static int over_budget(struct assistant *a, int64_t *used)
{
  struct usage_filter f = {assistant_day_start_ms(), NULL, 0, 0};
  int64_t p = 0, c = 0;

  *used = 0;
  if (a->cfg->llm_daily_token_budget <= 0)
    return 0;
  if (a->l->ops->usage_sum(a->l, &f, &p, &c))
    return 0;   /* cannot tell: do not stop the bot over accounting */
  *used = p + c;
  return *used >= a->cfg->llm_daily_token_budget;
}

static void record(struct assistant *a, const char *channel, int64_t chat_id, int64_t job_id,
                   int64_t prompt, int64_t completion)
{
  struct llm_usage u = {channel, chat_id, job_id, a->model, prompt, completion};

  if (!prompt && !completion)
    return;
  log_info("assistant", "model tokens: %" PRId64 " prompt, %" PRId64 " completion (job %" PRId64
           ", chat %" PRId64 ")", prompt, completion, job_id, chat_id);
  if (a->l->ops->usage_add(a->l, &u))
    log_warn("assistant", "cannot record token usage: %s", a->l->errmsg);
}

static char *say_budget(int64_t used, int budget)
{
  char u[32], b[32];

  snprintf(u, sizeof u, "%" PRId64, used);
  snprintf(b, sizeof b, "%d", budget);
  return persona_render(persona_current(), "budget_spent", "used", u, "budget", b, NULL);
}

/* ---- planning jobs -------------------------------------------------------- */

/* Recent chat of a job's chat as model context (bounded). */
static void context_of(struct assistant *a, const char *channel, int64_t chat_id,
                       struct chat_msg **v, size_t *n, struct llm_msg *ctx, size_t *nctx)
{
  *nctx = 0;
  if (a->l->ops->msg_recent(a->l, channel, chat_id, CONTEXT_MSGS, v, n))
    return;
  for (size_t i = 0; i < *n; i++)
    ctx[(*nctx)++] = (struct llm_msg){(*v)[i].role, (*v)[i].text};
}

/* Plans with the model; *plan_json NULL → offline, with *note saying why. */
static enum err model_plan(struct assistant *a, const struct job *j, char **plan_json,
                           char **note, int64_t usage[2], char *why, size_t n)
{
  struct planner_llm_in in = {0};
  struct planner_llm_out out;
  struct chat_msg *hist = NULL;
  struct llm_msg ctx[CONTEXT_MSGS];
  size_t nh = 0;
  int64_t used;
  enum err e;

  *plan_json = NULL;
  *note = NULL;
  if (!a->llm)
    return ERR_OK;   /* offline now: the offline planner, nothing to say */
  if (over_budget(a, &used)) {
    *note = say_budget(used, a->cfg->llm_daily_token_budget);
    return ERR_OK;
  }
  context_of(a, j->channel, j->chat_id, &hist, &nh, ctx, &in.n_context);
  /* Context is what came before the request, not the request itself. */
  for (size_t i = in.n_context; i-- > 0;)
    if (strcmp(ctx[i].role, "user") == 0 && strstr(ctx[i].text, j->text)) {
      in.n_context = i;
      break;
    }
  in.text = j->text;
  in.context = ctx;
  in.providers = a->providers;
  e = planner_llm(a->llm, &in, &out, why, n);
  usage[0] = out.prompt_tokens;
  usage[1] = out.completion_tokens;
  chat_msg_list_free(hist, nh);
  if (e == ERR_OK) {
    *plan_json = out.plan_json;
    return ERR_OK;
  }
  if (e == ERR_UNSUPPORTED || e == ERR_DENIED || e == ERR_PARSE || e == ERR_NOMEM)
    return e;   /* a clear failure, said in chat */
  *note = persona_render(persona_current(), "model_fallback", "reason", why, NULL);
  return ERR_OK;
}

/* Plans job j (CREATED) and announces the outcome; proposal: offered in
 * conversation, so it waits for approval whatever its risk. */
static enum err plan_one(struct assistant *a, const struct job *j, int proposal)
{
  struct submit_req r = {0};
  struct submit_res res = {0};
  struct ledger *l = a->l;
  char why[512] = "", *plan = NULL, *note = NULL;
  int64_t usage[2] = {0, 0};
  enum err e, pe;

  pe = model_plan(a, j, &plan, &note, usage, why, sizeof why);
  r.channel = j->channel;
  r.chat_id = j->chat_id;
  r.user_id = j->user_id;
  r.text = j->text;
  r.plan_json = plan;
  r.actor = "planner";
  r.require_approval = proposal;
  if ((e = l->ops->begin(l)))
    goto out;
  /* The cost is recorded with the outcome: one commit, one fsync. */
  record(a, j->channel, j->chat_id, j->id, usage[0], usage[1]);
  if (note && (e = conv_say(l, j->channel, j->chat_id, note)))
    goto rollback;
  if (pe) {
    res.job_id = j->id;
    res.state = JOB_FAILED;
    snprintf(res.reason, sizeof res.reason, "%s", why);
    e = l->ops->job_transition(l, j->id, JOB_CREATED, JOB_FAILED, "planner", why);
  } else {
    e = orch_plan(a->orch, l, j->id, &r, &res);
  }
  if (e == ERR_STATE) {   /* another planner took it */
    l->ops->rollback(l);
    e = ERR_OK;
    goto out;
  }
  if (!e)
    e = conv_announce(l, j->channel, j->chat_id, &res, proposal);
  if (e)
    goto rollback;
  if ((e = l->ops->commit(l)))
    goto out;
  orch_wake(a->orch);
  goto out;
rollback:
  l->ops->rollback(l);
out:
  submit_res_release(&res);
  free(plan);
  free(note);
  return e;
}

#define PROPOSER "assistant"

/* A job the assistant made from a chat turn waits for approval whatever its
 * risk; its first transition's actor says so, durably. */
static int proposed(struct assistant *a, int64_t id)
{
  struct transition *t = NULL;
  size_t n = 0;
  int yes = 0;

  if (a->l->ops->job_transitions(a->l, id, &t, &n) == ERR_OK && n)
    yes = t[0].actor && strcmp(t[0].actor, PROPOSER) == 0;
  transition_list_free(t, n);
  return yes;
}

static int plan_created(struct assistant *a)
{
  struct job_filter f = {NULL, 0, 0, JOB_CREATED, BATCH};
  struct job *v = NULL;
  size_t n = 0;

  if (a->l->ops->job_list(a->l, &f, &v, &n) || !n) {
    job_list_free(v, n);
    return 0;
  }
  int done = 0;
  for (size_t i = n; i-- > 0 && !a->stop;) {   /* oldest first */
    if (plan_one(a, &v[i], proposed(a, v[i].id)))
      log_warn("assistant", "cannot plan job #%" PRId64 ": %s", v[i].id, a->l->errmsg);
    else
      done++;
  }
  job_list_free(v, n);
  return done;   /* 0 after failures only: wait before trying again */
}

/* ---- chat ----------------------------------------------------------------- */

/* Fences a user's words as data. */
static char *fenced(const char *text)
{
  struct buf b = BUF_INIT(MSG_MAX + 128);

  buf_appends(&b, "<<<untrusted user message\n");
  buf_append_clipped(&b, text, MSG_MAX);
  buf_appends(&b, "\n>>>");
  return buf_detach(&b);
}

/* Older turns that no longer fit the history budget are folded into a
 * summary kept in the ledger, so a long chat keeps its gist. */
static void summarise(struct assistant *a, const struct chat_turn *t, struct chat_msg *v,
                      size_t drop, char **summary)
{
  char key[96], *old = NULL, why[256];
  int64_t upto = 0;
  json_object *o = NULL, *x;
  struct buf in = BUF_INIT(64 * 1024);
  struct llm_req req = {0};
  struct llm_resp resp;
  struct llm_msg m;

  snprintf(key, sizeof key, SUMMARY_KEY "%s:%" PRId64, t->channel, t->chat_id);
  if (a->l->ops->kv_get(a->l, key, &old) == ERR_OK && (o = json_tokener_parse(old))) {
    if (json_object_object_get_ex(o, "upto", &x))
      upto = json_object_get_int64(x);
    if (json_object_object_get_ex(o, "text", &x))
      *summary = strdup(json_object_get_string(x));
  }
  json_object_put(o);
  free(old);
  if (!drop || v[drop - 1].at <= upto)
    return;   /* nothing new fell out of the window */
  buf_appends(&in, "Summarise this chat in at most 5 short lines for your own memory: who "
                   "asked for what, what was done, open questions. Plain text.\n");
  if (*summary)
    buf_printf(&in, "Earlier summary:\n%s\n", *summary);
  buf_appends(&in, "<<<untrusted chat\n");
  for (size_t i = 0; i < drop; i++)
    if (v[i].at > upto) {
      buf_printf(&in, "%s: ", v[i].role);
      buf_append_clipped(&in, v[i].text, 600);
      buf_appends(&in, "\n");
    }
  buf_appends(&in, ">>>");
  m = (struct llm_msg){"user", buf_str(&in)};
  req.system = "You write brief factual summaries.";
  req.msgs = &m;
  req.n_msgs = 1;
  req.max_tokens = SUMMARY_MAX_TOKENS;
  req.temperature = 0.2;
  if (llm_call(a->llm, &req, &resp, why, sizeof why) == ERR_OK) {
    record(a, t->channel, t->chat_id, 0, resp.prompt_tokens, resp.completion_tokens);
    if (resp.text && *resp.text) {
      json_object *n = json_object_new_object();
      json_object_object_add(n, "upto", json_object_new_int64(v[drop - 1].at));
      json_object_object_add(n, "text", json_object_new_string(resp.text));
      a->l->ops->kv_set(a->l, key, json_object_to_json_string_ext(n, JSON_C_TO_STRING_PLAIN));
      json_object_put(n);
      free(*summary);
      *summary = strdup(resp.text);
    }
    llm_resp_release(&resp);
  }
  buf_release(&in);
}

/* The reply and the task the model proposes, from its answer. */
static void parse_chat(const char *text, char **reply, char **task)
{
  char *j = planner_json_extract(text);
  json_object *o = j ? json_tokener_parse(j) : NULL, *v;

  *reply = *task = NULL;
  if (o && json_object_is_type(o, json_type_object)) {
    if (json_object_object_get_ex(o, "reply", &v) && json_object_is_type(v, json_type_string))
      *reply = strdup(json_object_get_string(v));
    if (json_object_object_get_ex(o, "task", &v) && json_object_is_type(v, json_type_string) &&
        json_object_get_string_len(v) > 0)
      *task = strdup(json_object_get_string(v));
  }
  if (!*reply && !*task)
    *reply = strdup(text ? text : "");   /* a model that ignored the format */
  json_object_put(o);
  free(j);
}

/* The task a chat turn asked for: a job in CREATED, planned next as a
 * proposal (see proposed()).  Inside the caller's transaction. */
static enum err propose(struct assistant *a, const struct chat_turn *t, const char *task)
{
  struct submit_req r = {0};
  int64_t id;

  r.channel = t->channel;
  r.chat_id = t->chat_id;
  r.user_id = t->user_id;
  r.text = task;
  r.actor = PROPOSER;
  return orch_create(a->orch, a->l, &r, &id);
}

static enum err chat_one(struct assistant *a, const struct chat_turn *t)
{
  struct chat_msg *v = NULL;
  struct llm_msg *msgs = NULL;
  struct llm_req req = {0};
  struct llm_resp resp = {0};
  struct buf sys = BUF_INIT(64 * 1024);
  char why[300], *text = NULL, *reply = NULL, *task = NULL, *summary = NULL;
  char **owned = NULL;
  size_t n = 0, first, nm = 0;
  int64_t used, budget = a->cfg->llm_history_tokens;
  enum err e;

  if (!a->llm) {
    text = persona_render(persona_current(), "chat_offline", NULL);
    goto answer;
  }
  if (over_budget(a, &used)) {
    text = say_budget(used, a->cfg->llm_daily_token_budget);
    goto answer;
  }
  if ((e = a->l->ops->msg_recent(a->l, t->channel, t->chat_id, HISTORY_FETCH, &v, &n)))
    return e;
  /* Newest first until the token budget: the rest is summarised. */
  first = n;
  for (int64_t tokens = 0; first > 0; first--) {
    tokens += llm_estimate_tokens(v[first - 1].text) + 4;
    if (tokens > budget && first < n)
      break;
  }
  summarise(a, t, v, first, &summary);
  buf_appends(&sys, persona_system(persona_current()));
  buf_appends(&sys, chat_rules);
  if (summary)
    buf_printf(&sys, "\nEarlier in this chat (your summary): %s", summary);
  msgs = calloc(n - first + 1, sizeof *msgs);
  owned = calloc(n - first + 1, sizeof *owned);
  if (!msgs || !owned) {
    e = ERR_NOMEM;
    goto out;
  }
  for (size_t i = first; i < n; i++) {
    int user = strcmp(v[i].role, "user") == 0;
    owned[nm] = user ? fenced(v[i].text) : NULL;
    msgs[nm] = (struct llm_msg){user ? "user" : "assistant", user ? owned[nm] : v[i].text};
    if (user && !owned[nm]) {
      e = ERR_NOMEM;
      goto out;
    }
    nm++;
  }
  if (!nm || strcmp(msgs[nm - 1].role, "user") != 0) {
    /* Every chat model wants the last word to be the user's. */
    owned[nm] = fenced(t->text);
    msgs[nm] = (struct llm_msg){"user", owned[nm]};
    nm++;
  }
  req.system = buf_str(&sys);
  req.msgs = msgs;
  req.n_msgs = nm;
  req.schema_name = "chat";
  req.schema_json = chat_schema;
  req.schema_gemini = chat_schema_gemini;
  req.max_tokens = CHAT_MAX_TOKENS;
  req.temperature = 0.6;
  e = llm_call(a->llm, &req, &resp, why, sizeof why);
  if (e) {
    text = persona_render(persona_current(), "model_down", "reason", why, NULL);
  } else if (resp.refused) {
    snprintf(why, sizeof why, "%s", resp.detail);
    text = persona_render(persona_current(), "model_down", "reason", why, NULL);
  } else {
    parse_chat(resp.text, &reply, &task);
    text = reply;
    reply = NULL;
  }
answer:
  e = ERR_OK;
  if ((e = a->l->ops->begin(a->l)))
    goto out;
  record(a, t->channel, t->chat_id, 0, resp.prompt_tokens, resp.completion_tokens);
  if (text && *text)
    e = conv_say(a->l, t->channel, t->chat_id, text);
  if (!e && task)
    e = propose(a, t, task);
  if (!e)
    e = a->l->ops->turn_done(a->l, t->id);
  if (e) {
    a->l->ops->rollback(a->l);
    goto out;
  }
  e = a->l->ops->commit(a->l);
out:
  for (size_t i = 0; owned && i < nm; i++)
    free(owned[i]);
  free(owned);
  free(msgs);
  chat_msg_list_free(v, n);
  llm_resp_release(&resp);
  buf_release(&sys);
  free(text);
  free(reply);
  free(task);
  free(summary);
  return e;
}

static int answer_turns(struct assistant *a)
{
  struct chat_turn *v = NULL;
  size_t n = 0;

  if (a->l->ops->turn_pending(a->l, BATCH, &v, &n) || !n) {
    chat_turn_list_free(v, n);
    return 0;
  }
  int done = 0;
  for (size_t i = 0; i < n && !a->stop; i++) {
    enum err e = chat_one(a, &v[i]);
    if (e == ERR_OK) {
      done++;
    } else if (e != ERR_DB) {
      /* One turn that cannot be answered does not block the queue. */
      log_warn("assistant", "cannot answer chat turn %" PRId64 ": %s", v[i].id, err_str(e));
      if (a->l->ops->turn_done(a->l, v[i].id) == ERR_OK)
        done++;
    } else {
      log_warn("assistant", "chat turn %" PRId64 " waits: %s", v[i].id, a->l->errmsg);
      break;   /* the database is away: keep the turn, try again later */
    }
  }
  chat_turn_list_free(v, n);
  return done;
}

/* ---- thread ---------------------------------------------------------------- */

static void *run(void *arg)
{
  struct assistant *a = arg;
  int recheck = 0;   /* short waits left after a kick that found nothing */

  for (;;) {
    int wait_ms = recheck ? 25 : POLL_MS, kicked;
    pthread_mutex_lock(&a->mu);
    if (!a->kicked && !a->stop) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
      ts.tv_sec += wait_ms / 1000 + ts.tv_nsec / 1000000000L;
      ts.tv_nsec %= 1000000000L;
      pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    kicked = a->kicked;
    a->kicked = 0;
    int stop = a->stop;
    pthread_mutex_unlock(&a->mu);
    if (stop)
      break;
    int did = 0;
    while (!a->stop && (plan_created(a) + answer_turns(a)) > 0)
      did = 1;
    /* A kick may come before its channel commits the work: look again soon. */
    if (kicked && !did)
      recheck = 8;
    else if (recheck)
      recheck = did ? 0 : recheck - 1;
  }
  return NULL;
}

void assistant_kick(struct assistant *a)
{
  if (!a)
    return;
  pthread_mutex_lock(&a->mu);
  a->kicked = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

static void destroy(struct assistant *a)
{
  llm_free(a->llm);
  ledger_close(a->l);
  free(a->providers);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}

/* Everything but the thread; with_model 0: no model client (offline). */
static enum err setup(const struct cfg *cfg, const struct registry *reg, struct orch *o,
                      int with_model, struct assistant **out, char *why, size_t n)
{
  struct assistant *a;
  struct llm_opts opts;
  enum err e = ERR_OK;
  size_t k = 0;

  *out = NULL;
  if (!(a = calloc(1, sizeof *a)))
    return ERR_NOMEM;
  a->cfg = cfg;
  a->reg = reg;
  a->orch = o;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->kicked = 1;   /* look at once for what a previous run left */
  llm_opts_default(&opts);
  opts.timeout_ms = cfg->llm_timeout_s * 1000;
  opts.deadline_ms = opts.timeout_ms * 2;
  opts.max_attempts = cfg->llm_max_retries + 1;
  if ((with_model && (e = llm_new(cfg, &opts, &a->llm, why, n))) ||
      (e = ledger_open(cfg->database_url, &a->l, why, n))) {
    destroy(a);
    return e;
  }
  if (a->llm)
    snprintf(a->model, sizeof a->model, "%s %s", llm_name(a->llm), llm_model(a->llm));
  else
    snprintf(a->model, sizeof a->model, "offline");
  if (!(a->providers = calloc(reg->n + 2, sizeof *a->providers))) {
    destroy(a);
    return ERR_NOMEM;
  }
  a->providers[k++] = reg->default_name;
  for (size_t i = 0; i < reg->n; i++)
    if (strcmp(reg->v[i].name, reg->default_name) != 0)
      a->providers[k++] = reg->v[i].name;
  *out = a;
  return ERR_OK;
}

enum err assistant_drain_offline(const struct cfg *cfg, const struct registry *reg,
                                 struct orch *o)
{
  struct assistant *a;
  char why[256];
  enum err e;
  int rounds = 0;

  if ((e = setup(cfg, reg, o, 0, &a, why, sizeof why))) {
    log_warn("assistant", "cannot look for work left by a model-backed run: %s", why);
    return e;
  }
  while (rounds++ < 1000 && plan_created(a) + answer_turns(a) > 0)
    ;
  destroy(a);
  return ERR_OK;
}

enum err assistant_start(const struct cfg *cfg, const struct registry *reg, struct orch *o,
                         struct assistant **out, char *why, size_t n)
{
  struct assistant *a;
  enum err e;

  *out = NULL;
  if (!cfg->llm_provider || strcmp(cfg->llm_provider, "offline") == 0) {
    snprintf(why, n, "llm.provider is offline");
    return ERR_UNSUPPORTED;
  }
  if ((e = setup(cfg, reg, o, 1, &a, why, n)))
    return e;
  if (pthread_create(&a->th, NULL, run, a)) {
    snprintf(why, n, "cannot start the assistant thread");
    destroy(a);
    return ERR_NOMEM;
  }
  log_info("assistant", "model %s at %s", a->model, llm_base(a->llm));
  *out = a;
  return ERR_OK;
}

void assistant_stop(struct assistant *a)
{
  if (!a)
    return;
  pthread_mutex_lock(&a->mu);
  a->stop = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->th, NULL);
  destroy(a);
}
