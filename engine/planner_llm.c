/* engine/planner_llm.c — plans from a language model.
 *
 * The model gets a lean prompt: the persona's system prompt, the rules of the
 * plan format, the action catalog and the provider names, then the request
 * and a little recent chat, each fenced as untrusted data with a marker the
 * text cannot contain.  Its answer is dug out of whatever it wrapped it in
 * (prose, a code fence), parsed and validated by plan_parse() like any plan;
 * on a validation failure the model gets one repair round with the error.
 * What comes out is only a proposal: the orchestrator runs the policy engine
 * over the concrete steps, and a risk the model claims can only raise. */
#include "planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "log.h"
#include "persona.h"
#include "plan.h"
#include "providers/llm/llm.h"

#define PROMPT_MAX (64 * 1024)
#define CONTEXT_ITEM_MAX 600     /* bytes of one earlier chat message */
#define REQUEST_MAX 4000
#define ANSWER_ECHO_MAX 4000     /* of a bad answer, sent back for repair */
#define PLAN_MAX_TOKENS 2048

static const char rules[] =
    "Task: turn the request into a plan for the SKYNET executor. Answer with one JSON "
    "object and nothing else:\n"
    "{\"summary\": \"one line\", \"steps\": [{\"action\": \"<action>\", \"args\": {...}, "
    "\"description\": \"why\", \"provider\": \"<provider>\", \"timeout_s\": 60}], "
    "\"risk\": \"READ_ONLY|WRITE|ADMIN\"}\n"
    "Rules: 1 to 16 steps, in order; prefer a specific action to shell; shell takes argv, "
    "a list of words run without a shell; omit provider for the default; risk is your "
    "honest estimate and a policy engine re-checks every step. If the request is not "
    "operations work or cannot be done with these actions, answer {\"summary\": "
    "\"cannot plan: <why>\", \"steps\": [], \"risk\": \"READ_ONLY\"}.\n";

static void fence_nonce(char out[17], const char *a, const char *b)
{
  /* A marker neither text contains, so neither can close the fence. */
  for (unsigned x = 0x5eed;; x = x * 2654435761u + 1) {
    snprintf(out, 17, "%08x", x);
    if ((!a || !strstr(a, out)) && (!b || !strstr(b, out)))
      return;
  }
}

/* JSON Schema (OpenAI) and Gemini's OpenAPI subset for a plan. */
static char *plan_schema(int gemini)
{
  const char *T = gemini ? "OBJECT" : "object", *S = gemini ? "STRING" : "string";
  const char *A = gemini ? "ARRAY" : "array", *I = gemini ? "INTEGER" : "integer";
  json_object *root = json_object_new_object(), *props = json_object_new_object();
  json_object *steps = json_object_new_object(), *item = json_object_new_object();
  json_object *ip = json_object_new_object(), *actions = json_object_new_array();
  json_object *args = json_object_new_object(), *risk = json_object_new_object();
  json_object *risks = json_object_new_array(), *req, *o;
  const struct catalog_action *cat;
  size_t n;
  char *out;

#define TYPED(t) (o = json_object_new_object(), json_object_object_add(o, "type", json_object_new_string(t)), o)
  cat = catalog_actions(&n);
  for (size_t i = 0; i < n; i++)
    json_object_array_add(actions, json_object_new_string(cat[i].name));
  o = TYPED(S);
  json_object_object_add(o, "enum", actions);
  json_object_object_add(ip, "action", o);
  json_object_object_add(args, "type", json_object_new_string(T));
  if (gemini) {
    /* Gemini wants every property of an OBJECT named: the catalog's args. */
    json_object *ap = json_object_new_object();
    static const char *const strs[] = {"path", "content", "repo", "dir", "url", "name"};
    static const char *const lists[] = {"argv", "command"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
      json_object_object_add(ap, strs[i], TYPED(S));
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
      json_object *l = TYPED(A);
      json_object_object_add(l, "items", TYPED(S));
      json_object_object_add(ap, lists[i], l);
    }
    json_object_object_add(args, "properties", ap);
  }
  json_object_object_add(ip, "args", args);
  json_object_object_add(ip, "description", TYPED(S));
  json_object_object_add(ip, "provider", TYPED(S));
  json_object_object_add(ip, "timeout_s", TYPED(I));
  json_object_object_add(item, "type", json_object_new_string(T));
  json_object_object_add(item, "properties", ip);
  req = json_object_new_array();
  json_object_array_add(req, json_object_new_string("action"));
  json_object_array_add(req, json_object_new_string("args"));
  json_object_object_add(item, "required", req);
  json_object_object_add(steps, "type", json_object_new_string(A));
  json_object_object_add(steps, "items", item);
  json_object_object_add(props, "summary", TYPED(S));
  json_object_object_add(props, "steps", steps);
  json_object_object_add(risk, "type", json_object_new_string(S));
  json_object_array_add(risks, json_object_new_string("READ_ONLY"));
  json_object_array_add(risks, json_object_new_string("WRITE"));
  json_object_array_add(risks, json_object_new_string("ADMIN"));
  json_object_object_add(risk, "enum", risks);
  json_object_object_add(props, "risk", risk);
  json_object_object_add(root, "type", json_object_new_string(T));
  json_object_object_add(root, "properties", props);
  req = json_object_new_array();
  json_object_array_add(req, json_object_new_string("summary"));
  json_object_array_add(req, json_object_new_string("steps"));
  json_object_object_add(root, "required", req);
#undef TYPED
  out = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
  json_object_put(root);
  return out;
}

char *planner_json_extract(const char *text)
{
  const char *start, *stop, *f, *s, *e = NULL;
  size_t n;
  char *out;

  if (!text)
    return NULL;
  start = text;
  stop = text + strlen(text);
  /* ```json ... ```: only what is inside the first fence. */
  if ((f = strstr(text, "```"))) {
    const char *body = strchr(f + 3, '\n'), *close = body ? strstr(body, "```") : NULL;
    if (close && memchr(body, '{', (size_t)(close - body))) {
      start = body;
      stop = close;
    }
  }
  if (!(s = memchr(start, '{', (size_t)(stop - start))))
    return NULL;
  for (const char *p = s; p < stop; p++)
    if (*p == '}')
      e = p;
  if (!e)
    return NULL;
  n = (size_t)(e - s) + 1;
  if (!(out = malloc(n + 1)))
    return NULL;
  memcpy(out, s, n);
  out[n] = 0;
  return out;
}

/* Validates an answer: a plan, or the model's "cannot plan".  0 ok. */
static enum err check_answer(const char *text, const char *const *providers, char **json,
                             char *why, size_t n)
{
  json_object *root = NULL, *v;
  struct plan p;
  enum err e;

  *json = planner_json_extract(text);
  if (!*json) {
    snprintf(why, n, "the answer holds no JSON object");
    return ERR_PARSE;
  }
  root = json_tokener_parse(*json);
  if (!root || !json_object_is_type(root, json_type_object)) {
    json_object_put(root);
    snprintf(why, n, "the answer is not valid JSON (truncated or malformed)");
    return ERR_PARSE;
  }
  if (json_object_object_get_ex(root, "steps", &v) && json_object_is_type(v, json_type_array) &&
      json_object_array_length(v) == 0) {
    json_object *sm;
    const char *s = json_object_object_get_ex(root, "summary", &sm) ? json_object_get_string(sm) : NULL;
    snprintf(why, n, "%s", s && *s ? s : "the model found no way to plan this");
    json_object_put(root);
    return ERR_UNSUPPORTED;
  }
  json_object_put(root);
  if ((e = plan_parse(*json, strlen(*json), &p, why, n)))
    return e;
  for (size_t i = 0; providers && i < p.n_steps; i++) {
    const char *want = p.steps[i].provider;
    int known = !want;
    for (size_t k = 0; !known && providers[k]; k++)
      known = strcmp(providers[k], want) == 0;
    if (!known) {
      snprintf(why, n, "step %zu: unknown provider '%.60s'", i + 1, want);
      plan_release(&p);
      return ERR_PARSE;
    }
  }
  plan_release(&p);
  return ERR_OK;
}

static enum err build_prompt(const struct planner_llm_in *in, struct buf *sys, struct buf *user)
{
  size_t n;
  const struct catalog_action *cat = catalog_actions(&n);
  const struct persona *pe = persona_current();
  char nonce[17];

  buf_appends(sys, pe ? persona_system(pe) : "You are SKYNET, an operations agent.");
  buf_printf(sys, "\n%sActions (name(args): what it does):\n", rules);
  for (size_t i = 0; i < n; i++)
    buf_printf(sys, "- %s(%s): %s\n", cat[i].name, cat[i].args, cat[i].summary);
  buf_appends(sys, "Providers:");
  for (size_t i = 0; in->providers && in->providers[i]; i++)
    buf_printf(sys, " %s%s", in->providers[i], i == 0 ? " (default)" : "");
  buf_appends(sys, "\n");

  fence_nonce(nonce, in->text, NULL);
  for (size_t i = 0; i < in->n_context; i++)
    if (strstr(in->context[i].text, nonce))
      fence_nonce(nonce, in->context[i].text, in->text);
  if (in->n_context) {
    buf_printf(user, "Recent chat, for context only <<<untrusted %s\n", nonce);
    for (size_t i = 0; i < in->n_context; i++) {
      buf_printf(user, "%s: ", in->context[i].role);
      buf_append_clipped(user, in->context[i].text, CONTEXT_ITEM_MAX);
      buf_appends(user, "\n");
    }
    buf_printf(user, "untrusted %s>>>\n", nonce);
  }
  buf_printf(user, "The request <<<untrusted %s\n", nonce);
  buf_append_clipped(user, in->text, REQUEST_MAX);
  if (buf_printf(user, "\nuntrusted %s>>>\nAnswer with the plan JSON only.", nonce))
    return ERR_TOOBIG;
  return ERR_OK;
}

static void add_usage(struct planner_llm_out *out, const struct llm_resp *r)
{
  out->prompt_tokens += r->prompt_tokens;
  out->completion_tokens += r->completion_tokens;
}

enum err planner_llm(struct llm *c, const struct planner_llm_in *in,
                     struct planner_llm_out *out, char *why, size_t n)
{
  struct buf sys = BUF_INIT(PROMPT_MAX), user = BUF_INIT(PROMPT_MAX), fix = BUF_INIT(8192);
  struct llm_req req = {0};
  struct llm_resp resp;
  struct llm_msg msgs[3];
  char *json = NULL, *sj = plan_schema(0), *sg = plan_schema(1), err[300] = "";
  char *prev = NULL;   /* the bad answer, shown to the model in the repair round */
  enum err e;

  memset(out, 0, sizeof *out);
  if (!sj || !sg || (e = build_prompt(in, &sys, &user))) {
    snprintf(why, n, "cannot build the planning prompt");
    e = ERR_NOMEM;
    goto done;
  }
  msgs[0] = (struct llm_msg){"user", buf_str(&user)};
  req.system = buf_str(&sys);
  req.msgs = msgs;
  req.n_msgs = 1;
  req.schema_name = "plan";
  req.schema_json = sj;
  req.schema_gemini = sg;
  req.max_tokens = PLAN_MAX_TOKENS;
  req.temperature = 0.2;
  for (int round = 0; round < 2; round++) {
    if ((e = llm_call(c, &req, &resp, why, n))) {
      if (e == ERR_DENIED)
        e = ERR_UNAVAILABLE;   /* the key was refused: plan offline */
      goto done;
    }
    out->rounds++;
    if (!out->request_bytes)
      out->request_bytes = resp.request_bytes;
    add_usage(out, &resp);
    if (resp.refused) {
      snprintf(why, n, "the model declined: %s", resp.detail);
      llm_resp_release(&resp);
      e = ERR_DENIED;
      goto done;
    }
    free(json);
    json = NULL;
    e = check_answer(resp.text, in->providers, &json, err, sizeof err);
    if (e == ERR_OK || e == ERR_UNSUPPORTED) {
      if (e)
        snprintf(why, n, "%s", err);
      llm_resp_release(&resp);
      goto done;
    }
    if (resp.truncated)
      snprintf(err, sizeof err, "the answer was cut off at the token limit; make it shorter");
    log_info("planner", "model plan invalid (round %d): %s", round + 1, err);
    if (round == 0) {
      /* One repair round: the model sees its answer and what was wrong. */
      buf_clear(&fix);
      buf_append_clipped(&fix, resp.text ? resp.text : "", ANSWER_ECHO_MAX);
      prev = buf_detach(&fix);
      buf_printf(&fix, "That answer is not a valid plan: %s. Answer again with the "
                       "corrected plan JSON only.", err);
      msgs[1] = (struct llm_msg){"assistant", prev};
      msgs[2] = (struct llm_msg){"user", buf_str(&fix)};
      req.n_msgs = 3;
      llm_resp_release(&resp);
      continue;
    }
    llm_resp_release(&resp);
  }
  snprintf(why, n, "the model's plan was invalid twice: %s", err);
  e = ERR_PARSE;
done:
  if (e == ERR_OK) {
    out->plan_json = json;
    json = NULL;
  }
  free(prev);
  free(json);
  free(sj);
  free(sg);
  buf_release(&sys);
  buf_release(&user);
  buf_release(&fix);
  return e;
}
