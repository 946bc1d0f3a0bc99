/* engine/plan.c — plan parsing, validation against the action catalog, and
 * resolution of every step to the concrete argv the policy engine judges. */
#include "plan.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "policy.h"

#define ARG_MAX_LEN 4096
#define ARGV_MAX 64
#define CONTENT_MAX (1024 * 1024)

struct argv_vec {
  char **v;
  size_t n;
};

static enum err argv_push(struct argv_vec *a, const char *s)
{
  char **nv;

  if (a->n >= ARGV_MAX)
    return ERR_TOOBIG;
  nv = realloc(a->v, (a->n + 2) * sizeof *nv);
  if (!nv)
    return ERR_NOMEM;
  a->v = nv;
  if (!(a->v[a->n] = strdup(s)))
    return ERR_NOMEM;
  a->n++;
  a->v[a->n] = NULL;
  return ERR_OK;
}

static enum err argv_pushv(struct argv_vec *a, const char *const *list)
{
  enum err e = ERR_OK;

  for (; *list && !e; list++)
    e = argv_push(a, *list);
  return e;
}

static void argv_free(char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

/* Reads an optional or required string argument with bounds. */
static enum err arg_str(json_object *args, const char *key, int required,
                        const char **out, char *err, size_t errlen)
{
  json_object *v;

  *out = NULL;
  if (!json_object_object_get_ex(args, key, &v) || json_object_is_type(v, json_type_null)) {
    if (!required)
      return ERR_OK;
    snprintf(err, errlen, "missing argument '%s'", key);
    return ERR_INVAL;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "argument '%s' must be a string", key);
    return ERR_INVAL;
  }
  if ((size_t)json_object_get_string_len(v) > ARG_MAX_LEN ||
      strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v) ||
      (required && json_object_get_string_len(v) == 0)) {
    snprintf(err, errlen, "argument '%s' is empty, too long or holds NUL", key);
    return ERR_INVAL;
  }
  *out = json_object_get_string(v);
  return ERR_OK;
}

/* Reads an argv-style array of strings. */
static enum err arg_argv(json_object *args, const char *key, int required,
                         struct argv_vec *a, int *given, char *err, size_t errlen)
{
  json_object *v;
  size_t n;

  *given = 0;
  if (!json_object_object_get_ex(args, key, &v) || json_object_is_type(v, json_type_null)) {
    if (!required)
      return ERR_OK;
    snprintf(err, errlen, "missing argument '%s'", key);
    return ERR_INVAL;
  }
  if (!json_object_is_type(v, json_type_array) ||
      (n = json_object_array_length(v)) == 0 || n > ARGV_MAX) {
    snprintf(err, errlen, "argument '%s' must be a list of 1 to %d strings", key, ARGV_MAX);
    return ERR_INVAL;
  }
  for (size_t i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx(v, i);
    if (!json_object_is_type(s, json_type_string) ||
        (size_t)json_object_get_string_len(s) > ARG_MAX_LEN ||
        strlen(json_object_get_string(s)) != (size_t)json_object_get_string_len(s)) {
      snprintf(err, errlen, "argument '%s' item %zu must be a string without NUL", key, i + 1);
      return ERR_INVAL;
    }
    if (argv_push(a, json_object_get_string(s)))
      return ERR_NOMEM;
  }
  *given = 1;
  return ERR_OK;
}

struct build_ctx {
  json_object *args;
  struct argv_vec *argv;
  char **stdin_data;
  char *err;
  size_t errlen;
};

typedef enum err (*build_fn)(struct build_ctx *c);

static enum err b_shell(struct build_ctx *c)
{
  int given;

  return arg_argv(c->args, "argv", 1, c->argv, &given, c->err, c->errlen);
}

/* Actions that run a fixed command plus an optional path-like argument. */
static enum err fixed_with(struct build_ctx *c, const char *const *fixed,
                           const char *key, int required, const char *dflt)
{
  const char *v;
  enum err e;

  if ((e = arg_str(c->args, key, required, &v, c->err, c->errlen)))
    return e;
  if ((e = argv_pushv(c->argv, fixed)))
    return e;
  if (!v)
    v = dflt;
  if (v && (e = argv_push(c->argv, v)))
    return e;
  return ERR_OK;
}

static enum err b_disk_usage(struct build_ctx *c)
{
  static const char *const f[] = {"df", "-h", "--", NULL};
  return fixed_with(c, f, "path", 0, NULL);
}

static enum err b_memory(struct build_ctx *c)
{
  static const char *const f[] = {"free", "-h", NULL};
  return argv_pushv(c->argv, f);
}

static enum err b_uptime(struct build_ctx *c)
{
  static const char *const f[] = {"uptime", NULL};
  return argv_pushv(c->argv, f);
}

static enum err b_processes(struct build_ctx *c)
{
  static const char *const f[] = {"ps", "-eo", "pid,user,pcpu,pmem,etime,comm",
                                  "--sort=-pcpu", NULL};
  return argv_pushv(c->argv, f);
}

static enum err b_list_files(struct build_ctx *c)
{
  static const char *const f[] = {"ls", "-la", "--", NULL};
  return fixed_with(c, f, "path", 0, ".");
}

static enum err b_file_read(struct build_ctx *c)
{
  static const char *const f[] = {"head", "-c", "1048576", "--", NULL};
  return fixed_with(c, f, "path", 1, NULL);
}

static enum err b_file_delete(struct build_ctx *c)
{
  static const char *const f[] = {"rm", "-rf", "--", NULL};
  return fixed_with(c, f, "path", 1, NULL);
}

static enum err b_file_write(struct build_ctx *c)
{
  static const char *const f[] = {"tee", "--", NULL};
  json_object *v;
  enum err e;

  if ((e = fixed_with(c, f, "path", 1, NULL)))
    return e;
  if (!json_object_object_get_ex(c->args, "content", &v) ||
      !json_object_is_type(v, json_type_string) ||
      json_object_get_string_len(v) > CONTENT_MAX) {
    snprintf(c->err, c->errlen, "argument 'content' must be a string of at most %d bytes",
             CONTENT_MAX);
    return ERR_INVAL;
  }
  *c->stdin_data = strdup(json_object_get_string(v));
  return *c->stdin_data ? ERR_OK : ERR_NOMEM;
}

static enum err git_cmd(struct build_ctx *c, const char *const *tail)
{
  const char *repo;
  enum err e;

  if ((e = arg_str(c->args, "repo", 0, &repo, c->err, c->errlen)))
    return e;
  if ((e = argv_push(c->argv, "git")) || (e = argv_push(c->argv, "-C")) ||
      (e = argv_push(c->argv, repo ? repo : ".")))
    return e;
  return argv_pushv(c->argv, tail);
}

static enum err b_git_status(struct build_ctx *c)
{
  static const char *const t[] = {"status", "--short", "--branch", NULL};
  return git_cmd(c, t);
}

static enum err b_git_pull(struct build_ctx *c)
{
  static const char *const t[] = {"pull", "--ff-only", NULL};
  return git_cmd(c, t);
}

static enum err b_git_log(struct build_ctx *c)
{
  static const char *const t[] = {"log", "--oneline", "-n", "20", NULL};
  return git_cmd(c, t);
}

/* run_tests / build: an explicit command, else make in the directory. */
static enum err make_like(struct build_ctx *c, const char *target)
{
  const char *dir;
  int given;
  enum err e;

  if ((e = arg_str(c->args, "dir", 0, &dir, c->err, c->errlen)))
    return e;
  if ((e = arg_argv(c->args, "command", 0, c->argv, &given, c->err, c->errlen)))
    return e;
  if (given)
    return ERR_OK;
  if ((e = argv_push(c->argv, "make")) || (e = argv_push(c->argv, "-C")) ||
      (e = argv_push(c->argv, dir ? dir : ".")))
    return e;
  return target ? argv_push(c->argv, target) : ERR_OK;
}

static enum err b_run_tests(struct build_ctx *c)
{
  return make_like(c, "test");
}

static enum err b_build(struct build_ctx *c)
{
  return make_like(c, NULL);
}

static enum err b_http_check(struct build_ctx *c)
{
  static const char *const f[] = {"curl", "-sS", "-o", "/dev/null", "-w",
                                  "%{http_code} %{time_total}s\\n",
                                  "--max-time", "10", "--", NULL};
  const char *url;
  enum err e;

  if ((e = arg_str(c->args, "url", 1, &url, c->err, c->errlen)))
    return e;
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
    snprintf(c->err, c->errlen, "argument 'url' must start with http:// or https://");
    return ERR_INVAL;
  }
  if ((e = argv_pushv(c->argv, f)))
    return e;
  return argv_push(c->argv, url);
}

static enum err b_service_status(struct build_ctx *c)
{
  static const char *const f[] = {"systemctl", "status", "--no-pager", "--", NULL};
  const char *name;
  enum err e;

  if ((e = arg_str(c->args, "name", 1, &name, c->err, c->errlen)))
    return e;
  if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-") !=
      strlen(name)) {
    snprintf(c->err, c->errlen, "argument 'name' is not a service name");
    return ERR_INVAL;
  }
  if ((e = argv_pushv(c->argv, f)))
    return e;
  return argv_push(c->argv, name);
}

static enum err b_deploy(struct build_ctx *c)
{
  int given;

  return arg_argv(c->args, "command", 1, c->argv, &given, c->err, c->errlen);
}

static const struct catalog_entry {
  struct catalog_action a;
  build_fn build;
  enum risk floor;       /* the least risk the action carries */
} catalog[] = {
  {{"shell", "run a command (argv list, no shell unless argv says so)", "argv: [string]"}, b_shell, RISK_READ_ONLY},
  {{"disk_usage", "show free disk space", "path?: string"}, b_disk_usage, RISK_READ_ONLY},
  {{"memory", "show memory use", ""}, b_memory, RISK_READ_ONLY},
  {{"uptime", "show uptime and load", ""}, b_uptime, RISK_READ_ONLY},
  {{"processes", "list processes by CPU use", ""}, b_processes, RISK_READ_ONLY},
  {{"list_files", "list a directory", "path?: string"}, b_list_files, RISK_READ_ONLY},
  {{"file_read", "show a file (first MiB)", "path: string"}, b_file_read, RISK_READ_ONLY},
  {{"file_write", "write text to a file", "path: string, content: string"}, b_file_write, RISK_WRITE},
  {{"file_delete", "delete a file or directory", "path: string"}, b_file_delete, RISK_WRITE},
  {{"git_status", "show a repository's status", "repo?: string"}, b_git_status, RISK_READ_ONLY},
  {{"git_pull", "fast-forward a repository", "repo?: string"}, b_git_pull, RISK_WRITE},
  {{"git_log", "show recent commits", "repo?: string"}, b_git_log, RISK_READ_ONLY},
  {{"run_tests", "run a project's tests", "dir?: string, command?: [string]"}, b_run_tests, RISK_WRITE},
  {{"build", "build a project", "dir?: string, command?: [string]"}, b_build, RISK_WRITE},
  {{"http_check", "check that a URL answers", "url: string"}, b_http_check, RISK_READ_ONLY},
  {{"service_status", "show a systemd service's status", "name: string"}, b_service_status, RISK_READ_ONLY},
  {{"deploy", "run a deployment command", "command: [string]"}, b_deploy, RISK_ADMIN},
};

#define CATALOG_N (sizeof catalog / sizeof catalog[0])

const struct catalog_action *catalog_actions(size_t *n)
{
  static struct catalog_action flat[CATALOG_N];

  for (size_t i = 0; i < CATALOG_N; i++)
    flat[i] = catalog[i].a;
  *n = CATALOG_N;
  return flat;
}

static const struct catalog_entry *catalog_entry_find(const char *name)
{
  for (size_t i = 0; name && i < CATALOG_N; i++)
    if (strcmp(catalog[i].a.name, name) == 0)
      return &catalog[i];
  return NULL;
}

const struct catalog_action *catalog_find(const char *name)
{
  const struct catalog_entry *c = catalog_entry_find(name);

  return c ? &c->a : NULL;
}

static enum err step_opt_str(json_object *o, const char *key, size_t max,
                             char **out, char *err, size_t errlen)
{
  json_object *v;

  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
    return ERR_OK;
  if (!json_object_is_type(v, json_type_string) ||
      (size_t)json_object_get_string_len(v) > max) {
    snprintf(err, errlen, "'%s' must be a string of at most %zu bytes", key, max);
    return ERR_INVAL;
  }
  *out = strdup(json_object_get_string(v));
  return *out ? ERR_OK : ERR_NOMEM;
}

static enum err parse_timeout(json_object *o, int *out, char *err, size_t errlen)
{
  json_object *v;
  int64_t t;

  if (!json_object_object_get_ex(o, "timeout_s", &v) || json_object_is_type(v, json_type_null))
    return ERR_OK;
  if (!json_object_is_type(v, json_type_int) ||
      (t = json_object_get_int64(v)) < 1 || t > PLAN_MAX_TIMEOUT_S) {
    snprintf(err, errlen, "'timeout_s' must be an integer from 1 to %d", PLAN_MAX_TIMEOUT_S);
    return ERR_INVAL;
  }
  *out = (int)t;
  return ERR_OK;
}

/* The arguments every action may take: a command-level timeout and the
 * files to keep (absolute paths, read from skynet's file system). */
static enum err parse_common_args(json_object *args, struct plan_step *s,
                                  char *err, size_t errlen)
{
  struct argv_vec av = {NULL, 0};
  int given = 0;
  enum err e;

  if (!args)
    return ERR_OK;
  if ((e = parse_timeout(args, &s->cmd_timeout_s, err, errlen)))
    return e;
  e = arg_argv(args, "artifacts", 0, &av, &given, err, errlen);
  s->artifacts = av.v;
  s->n_artifacts = av.n;
  if (e)
    return e;
  if (s->n_artifacts > PLAN_MAX_ARTIFACTS) {
    snprintf(err, errlen, "argument 'artifacts' lists more than %d files", PLAN_MAX_ARTIFACTS);
    return ERR_INVAL;
  }
  for (size_t i = 0; i < s->n_artifacts; i++)
    if (s->artifacts[i][0] != '/') {
      snprintf(err, errlen, "argument 'artifacts' item %zu must be an absolute path, not '%.80s'",
               i + 1, s->artifacts[i]);
      return ERR_INVAL;
    }
  return ERR_OK;
}

static enum err parse_idempotent(json_object *o, struct plan_step *s, char *err,
                                 size_t errlen)
{
  json_object *v;

  if (!json_object_object_get_ex(o, "idempotent", &v) || json_object_is_type(v, json_type_null))
    return ERR_OK;
  if (!json_object_is_type(v, json_type_boolean)) {
    snprintf(err, errlen, "'idempotent' must be true or false");
    return ERR_INVAL;
  }
  s->has_idempotent = 1;
  s->idempotent = json_object_get_boolean(v);
  return ERR_OK;
}

int plan_step_idempotent(const struct plan_step *s)
{
  return s->has_idempotent ? s->idempotent : s->risk == RISK_READ_ONLY;
}

static enum err parse_step(json_object *o, struct plan_step *s, char *err, size_t errlen)
{
  const struct catalog_entry *ce;
  struct argv_vec av = {NULL, 0};
  struct build_ctx bc;
  json_object *act, *args = NULL;
  enum err e;

  if (!json_object_is_type(o, json_type_object)) {
    snprintf(err, errlen, "a step must be an object");
    return ERR_PARSE;
  }
  if (!json_object_object_get_ex(o, "action", &act) ||
      !json_object_is_type(act, json_type_string)) {
    snprintf(err, errlen, "'action' is missing or not a string");
    return ERR_PARSE;
  }
  if (!(ce = catalog_entry_find(json_object_get_string(act)))) {
    snprintf(err, errlen, "unknown action '%.64s'", json_object_get_string(act));
    return ERR_INVAL;
  }
  if (!(s->action = strdup(ce->a.name)))
    return ERR_NOMEM;
  if (json_object_object_get_ex(o, "args", &args) &&
      !json_object_is_type(args, json_type_object) &&
      !json_object_is_type(args, json_type_null)) {
    snprintf(err, errlen, "'args' must be an object");
    return ERR_PARSE;
  }
  if (!args || json_object_is_type(args, json_type_null))
    args = NULL;
  if ((e = step_opt_str(o, "description", 1000, &s->description, err, errlen)) ||
      (e = step_opt_str(o, "provider", 63, &s->provider, err, errlen)) ||
      (e = parse_timeout(o, &s->timeout_s, err, errlen)) ||
      (e = parse_common_args(args, s, err, errlen)) ||
      (e = parse_idempotent(o, s, err, errlen)))
    return e;
  json_object *empty = args ? NULL : json_object_new_object();
  bc = (struct build_ctx){args ? args : empty, &av, &s->stdin_data, err, errlen};
  e = ce->build(&bc);
  if (!(s->args_json = strdup(json_object_to_json_string_ext(
            bc.args, JSON_C_TO_STRING_PLAIN))))
    e = e ? e : ERR_NOMEM;
  json_object_put(empty);
  s->argv = av.v;
  s->argc = av.n;
  if (!e && (!s->argv || !s->argc)) {
    snprintf(err, errlen, "the step resolves to no command");
    e = ERR_INVAL;
  }
  s->risk = ce->floor;
  return e;
}

static enum err parse_top(json_object *root, struct plan *p, char *err, size_t errlen)
{
  json_object *steps, *risk;
  char serr[200];
  size_t n;
  enum err e;

  if (!json_object_is_type(root, json_type_object)) {
    snprintf(err, errlen, "the plan must be a JSON object");
    return ERR_PARSE;
  }
  if ((e = step_opt_str(root, "summary", 1000, &p->summary, err, errlen)))
    return e;
  if (!p->summary && !(p->summary = strdup("")))
    return ERR_NOMEM;
  if (json_object_object_get_ex(root, "risk", &risk) && !json_object_is_type(risk, json_type_null)) {
    if (!json_object_is_type(risk, json_type_string) ||
        risk_parse(json_object_get_string(risk), &p->claimed)) {
      snprintf(err, errlen, "'risk' must be READ_ONLY, WRITE, ADMIN or BLOCKED");
      return ERR_INVAL;
    }
    p->has_claimed = 1;
  }
  if (!json_object_object_get_ex(root, "steps", &steps) ||
      !json_object_is_type(steps, json_type_array) ||
      (n = json_object_array_length(steps)) == 0 || n > PLAN_MAX_STEPS) {
    snprintf(err, errlen, "'steps' must be a list of 1 to %d steps", PLAN_MAX_STEPS);
    return ERR_INVAL;
  }
  if (!(p->steps = calloc(n, sizeof *p->steps)))
    return ERR_NOMEM;
  p->n_steps = n;
  for (size_t i = 0; i < n; i++) {
    serr[0] = '\0';
    if ((e = parse_step(json_object_array_get_idx(steps, i), &p->steps[i], serr, sizeof serr))) {
      snprintf(err, errlen, "step %zu: %s", i + 1, serr[0] ? serr : err_str(e));
      return e;
    }
  }
  return ERR_OK;
}

enum err plan_parse(const char *json, size_t len, struct plan *out, char *err, size_t errlen)
{
  struct json_tokener *tok;
  json_object *root;
  enum err e;

  memset(out, 0, sizeof *out);
  if (len > PLAN_MAX_JSON) {
    snprintf(err, errlen, "the plan is larger than %d bytes", PLAN_MAX_JSON);
    return ERR_TOOBIG;
  }
  if (!(tok = json_tokener_new_ex(32)))
    return ERR_NOMEM;
  root = json_tokener_parse_ex(tok, json, (int)len);
  if (!root || json_tokener_get_error(tok) != json_tokener_success ||
      tok->char_offset < (int)len) {
    snprintf(err, errlen, "the plan is not valid JSON");
    json_object_put(root);
    json_tokener_free(tok);
    return ERR_PARSE;
  }
  json_tokener_free(tok);
  e = parse_top(root, out, err, errlen);
  json_object_put(root);
  if (e)
    plan_release(out);
  return e;
}

void plan_assess(struct plan *p)
{
  struct policy_verdict v;
  size_t worst = 0;

  p->risk = RISK_READ_ONLY;
  for (size_t i = 0; i < p->n_steps; i++) {
    struct plan_step *s = &p->steps[i];
    enum risk floor = s->risk;
    policy_check_argv((const char *const *)s->argv, &v);
    s->risk = risk_max(floor, v.risk);
    if (v.risk >= floor)
      snprintf(s->reason, sizeof s->reason, "%s", v.reason);
    else
      snprintf(s->reason, sizeof s->reason, "action '%s' is at least %s", s->action,
               risk_name(floor));
    if (i == 0 || s->risk > p->steps[worst].risk)
      worst = i;
  }
  if (p->n_steps) {
    p->risk = p->steps[worst].risk;
    snprintf(p->reason, sizeof p->reason, "%s", p->steps[worst].reason);
  }
  if (p->has_claimed && p->claimed > p->risk) {
    p->risk = p->claimed;
    snprintf(p->reason, sizeof p->reason, "the planner rated it %s", risk_name(p->claimed));
  }
}

static json_object *step_to_json(const struct plan_step *s)
{
  json_object *o = json_object_new_object();
  json_object *args = s->args_json ? json_tokener_parse(s->args_json) : NULL;

  json_object_object_add(o, "action", json_object_new_string(s->action));
  json_object_object_add(o, "args", args ? args : json_object_new_object());
  if (s->description)
    json_object_object_add(o, "description", json_object_new_string(s->description));
  if (s->provider)
    json_object_object_add(o, "provider", json_object_new_string(s->provider));
  if (s->timeout_s)
    json_object_object_add(o, "timeout_s", json_object_new_int(s->timeout_s));
  json_object_object_add(o, "idempotent", json_object_new_boolean(plan_step_idempotent(s)));
  return o;
}

char *plan_to_json(const struct plan *p)
{
  json_object *o = json_object_new_object(), *steps = json_object_new_array();
  char *s;

  json_object_object_add(o, "summary", json_object_new_string(p->summary ? p->summary : ""));
  for (size_t i = 0; i < p->n_steps; i++)
    json_object_array_add(steps, step_to_json(&p->steps[i]));
  json_object_object_add(o, "steps", steps);
  json_object_object_add(o, "risk", json_object_new_string(risk_name(p->risk)));
  s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_put(o);
  return s;
}

/* Appends one argument, single-quoted when the shell would split it. */
static void describe_arg(struct buf *b, const char *a)
{
  if (*a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789-_./=:,@%+") == strlen(a)) {
    buf_appends(b, a);
    return;
  }
  buf_appends(b, "'");
  for (; *a; a++) {
    if (*a == '\'')
      buf_appends(b, "'\\''");
    else
      buf_append(b, a, 1);
  }
  buf_appends(b, "'");
}

char *plan_describe(const struct plan *p)
{
  struct buf b = BUF_INIT(64 * 1024);

  for (size_t i = 0; i < p->n_steps; i++) {
    const struct plan_step *s = &p->steps[i];
    buf_printf(&b, "%s%zu. %s: ", i ? "\n" : "", i + 1, s->action);
    for (size_t j = 0; j < s->argc; j++) {
      if (j)
        buf_appends(&b, " ");
      describe_arg(&b, s->argv[j]);
    }
    if (s->provider)
      buf_printf(&b, " [on %s]", s->provider);
  }
  return buf_detach(&b);
}

void plan_release(struct plan *p)
{
  if (!p)
    return;
  for (size_t i = 0; i < p->n_steps; i++) {
    struct plan_step *s = &p->steps[i];
    free(s->action);
    free(s->args_json);
    free(s->description);
    free(s->provider);
    free(s->stdin_data);
    argv_free(s->argv);
    argv_free(s->artifacts);
  }
  free(p->steps);
  free(p->summary);
  memset(p, 0, sizeof *p);
}
