/* engine/planner_offline.c — keyword rules from words to catalog actions. */
#include "planner.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"

#define REQUEST_MAX 4000

/* Words that start a request in prose rather than a command line, even where
 * a program of that name exists (test, build, ...). */
static const char *const prose_verbs[] = {
  "check", "show", "what", "whats", "what's", "how", "list", "pull", "delete",
  "remove", "write", "read", "build", "test", "compile", "deploy", "get",
  "display", "tell", "please", "can", "could", "is", "are", "give", "find out",
  "fetch", "report", "count", NULL,
};

static const char *const shell_builtins[] = {
  ":", "echo", "cd", "export", "for", "while", "if", "exec", "set", "eval",
  "source", ".", "kill", "ulimit", "printf", "exit", NULL,
};

static int word_in(const char *w, size_t n, const char *const *list)
{
  for (; *list; list++)
    if (strlen(*list) == n && strncasecmp(w, *list, n) == 0)
      return 1;
  return 0;
}

static int executable_in_path(const char *w, size_t n)
{
  char name[256], path[512];
  const char *dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                        "/usr/bin", "/sbin", "/bin", NULL};

  if (n == 0 || n >= sizeof name)
    return 0;
  memcpy(name, w, n);
  name[n] = '\0';
  if (strchr(name, '/'))
    return access(name, X_OK) == 0;
  for (int i = 0; dirs[i]; i++) {
    snprintf(path, sizeof path, "%s/%s", dirs[i], name);
    if (access(path, X_OK) == 0)
      return 1;
  }
  return 0;
}

/* Length of the first word: up to white space or a shell metacharacter. */
static size_t first_word(const char *s)
{
  return strcspn(s, " \t\n|;&<>()$`{}");
}

static int has_shell_syntax(const char *s)
{
  return strpbrk(s, "|;&<>$`(){}*?~\\\"'\n") != NULL;
}

/* A command line: argv by white space, or `sh -c` when it has shell syntax. */
static json_object *command_step(const char *cmd)
{
  json_object *step = json_object_new_object(), *args = json_object_new_object();
  json_object *argv = json_object_new_array();

  if (has_shell_syntax(cmd)) {
    json_object_array_add(argv, json_object_new_string("sh"));
    json_object_array_add(argv, json_object_new_string("-c"));
    json_object_array_add(argv, json_object_new_string(cmd));
  } else {
    const char *p = cmd;
    while (*p) {
      size_t n;
      p += strspn(p, " \t");
      if (!(n = strcspn(p, " \t")))
        break;
      json_object_array_add(argv, json_object_new_string_len(p, (int)n));
      p += n;
    }
  }
  json_object_object_add(args, "argv", argv);
  json_object_object_add(step, "action", json_object_new_string("shell"));
  json_object_object_add(step, "args", args);
  json_object_object_add(step, "description", json_object_new_string(cmd));
  return step;
}

static json_object *action_step(const char *action, const char *key,
                                const char *val, const char *description)
{
  json_object *step = json_object_new_object(), *args = json_object_new_object();

  if (key && val)
    json_object_object_add(args, key, json_object_new_string(val));
  json_object_object_add(step, "action", json_object_new_string(action));
  json_object_object_add(step, "args", args);
  json_object_object_add(step, "description", json_object_new_string(description));
  return step;
}

static int has_word(const char *lower, const char *w)
{
  size_t n = strlen(w);

  for (const char *p = lower; (p = strstr(p, w)); p++) {
    int start = p == lower || !isalnum((unsigned char)p[-1]);
    int end = !isalnum((unsigned char)p[n]);
    if (start && end)
      return 1;
  }
  return 0;
}

/* The first token that looks like a path (starts with / or ~ or ./). */
static char *find_path(const char *text)
{
  for (const char *p = text; *p; p++) {
    if ((p == text || isspace((unsigned char)p[-1])) &&
        (*p == '/' || (*p == '~' && p[1] == '/') || (*p == '.' && p[1] == '/'))) {
      size_t n = strcspn(p, " \t\n,;");
      while (n > 1 && (p[n - 1] == '.' || p[n - 1] == '?' || p[n - 1] == '!'))
        n--;
      return strndup(p, n);
    }
  }
  return NULL;
}

static char *find_url(const char *text)
{
  const char *p = strstr(text, "http://");

  if (!p)
    p = strstr(text, "https://");
  return p ? strndup(p, strcspn(p, " \t\n,;")) : NULL;
}

/* The word after `after` ("service nginx" → "nginx"). */
static char *word_after(const char *text, const char *lower, const char *after)
{
  const char *p = strstr(lower, after);
  size_t n;

  if (!p)
    return NULL;
  p = text + (p - lower) + strlen(after);
  p += strspn(p, " \t");
  n = strcspn(p, " \t\n,;?!");
  return n ? strndup(p, n) : NULL;
}

struct rules_ctx {
  const char *text;
  const char *lower;
  json_object *steps;
};

static void add(struct rules_ctx *c, json_object *step)
{
  json_object_array_add(c->steps, step);
}

static void rule_file_ops(struct rules_ctx *c, const char *path)
{
  if (!path)
    return;
  if (has_word(c->lower, "delete") || has_word(c->lower, "remove")) {
    add(c, action_step("file_delete", "path", path, "delete the path"));
  } else if ((has_word(c->lower, "read") || has_word(c->lower, "show") ||
              has_word(c->lower, "cat") || has_word(c->lower, "print")) &&
             !has_word(c->lower, "disk") && !has_word(c->lower, "files")) {
    add(c, action_step("file_read", "path", path, "read the file"));
  }
}

/* "write hello to /tmp/x" */
static void rule_write(struct rules_ctx *c)
{
  const char *w = strstr(c->lower, "write ");
  const char *to = w ? strstr(w, " to /") : NULL;
  json_object *step;

  if (!w || !to)
    return;
  size_t off = (size_t)(w - c->lower) + 6, n = (size_t)(to - w) - 6;
  char *content = strndup(c->text + off, n);
  char *path = find_path(c->text + (to - c->lower) + 4);
  step = action_step("file_write", "path", path, "write the file");
  json_object *args;
  json_object_object_get_ex(step, "args", &args);
  json_object_object_add(args, "content", json_object_new_string(content));
  add(c, step);
  free(content);
  free(path);
}

static void rule_system(struct rules_ctx *c, const char *path)
{
  if (has_word(c->lower, "disk") || has_word(c->lower, "df") ||
      strstr(c->lower, "free space") || strstr(c->lower, "storage"))
    add(c, action_step("disk_usage", "path", path, "show disk usage"));
  if (has_word(c->lower, "memory") || has_word(c->lower, "ram"))
    add(c, action_step("memory", NULL, NULL, "show memory use"));
  if (has_word(c->lower, "uptime") || has_word(c->lower, "load"))
    add(c, action_step("uptime", NULL, NULL, "show uptime and load"));
  if (has_word(c->lower, "processes") || has_word(c->lower, "process") ||
      has_word(c->lower, "cpu"))
    add(c, action_step("processes", NULL, NULL, "list processes"));
  if (has_word(c->lower, "files") || strstr(c->lower, "list ") ||
      has_word(c->lower, "directory"))
    if (!has_word(c->lower, "delete") && !has_word(c->lower, "remove"))
      add(c, action_step("list_files", "path", path ? path : ".", "list files"));
}

static void rule_dev(struct rules_ctx *c, const char *path)
{
  int git = has_word(c->lower, "git") || has_word(c->lower, "repo") ||
            has_word(c->lower, "repository");

  if (has_word(c->lower, "pull"))
    add(c, action_step("git_pull", "repo", path, "pull the repository"));
  else if (git && (has_word(c->lower, "log") || has_word(c->lower, "commits")))
    add(c, action_step("git_log", "repo", path, "show recent commits"));
  else if (git)
    add(c, action_step("git_status", "repo", path, "show the repository status"));
  if (has_word(c->lower, "build") || has_word(c->lower, "compile"))
    add(c, action_step("build", "dir", path, "build the project"));
  if (has_word(c->lower, "tests") || has_word(c->lower, "test"))
    add(c, action_step("run_tests", "dir", path, "run the tests"));
}

static void rule_net(struct rules_ctx *c)
{
  char *url = find_url(c->text), *svc;

  if (url) {
    add(c, action_step("http_check", "url", url, "check the URL"));
    free(url);
  }
  if ((svc = word_after(c->text, c->lower, "service ")) ||
      (svc = word_after(c->text, c->lower, "status of "))) {
    if (!strchr("/.~", svc[0]) && strcasecmp(svc, "git") != 0 && strcasecmp(svc, "the") != 0)
      add(c, action_step("service_status", "name", svc, "show the service status"));
    free(svc);
  }
}

static json_object *keyword_steps(const char *text)
{
  struct rules_ctx c;
  char *lower = strdup(text), *path = find_path(text);

  for (char *p = lower; p && *p; p++)
    *p = (char)tolower((unsigned char)*p);
  c = (struct rules_ctx){text, lower ? lower : "", json_object_new_array()};
  rule_write(&c);
  if (!json_object_array_length(c.steps))
    rule_file_ops(&c, path);
  if (!json_object_array_length(c.steps)) {
    rule_system(&c, path);
    rule_dev(&c, path);
    rule_net(&c);
  }
  free(lower);
  free(path);
  return c.steps;
}

/* Strips a trailing "on NAME" naming a configured provider. */
static char *route_provider(const struct cfg *cfg, char *text)
{
  char *on = NULL;

  for (char *p = text; (p = strstr(p, " on ")); p++)
    on = p;
  if (!on || !cfg)
    return NULL;
  char *name = on + 4;
  name[strcspn(name, " \t?!.")] = '\0';
  if (!cfg_provider_find(cfg, name)) {
    name[strlen(name)] = ' ';
    return NULL;
  }
  char *dup = strdup(name);
  *on = '\0';
  return dup;
}

static int looks_like_prose(const char *text)
{
  static const char *const markers[] = {" of ", " the ", " in ", " for ", " please", NULL};

  if (has_shell_syntax(text))
    return 0;
  for (int i = 0; markers[i]; i++)
    if (strcasestr(text, markers[i]))
      return 1;
  return 0;
}

static int is_command_line(const char *text, const char **cmd)
{
  size_t n;

  *cmd = text;
  if (strncasecmp(text, "run ", 4) == 0 || strncmp(text, "$ ", 2) == 0) {
    const char *rest = text + (text[0] == '$' ? 2 : 4);
    rest += strspn(rest, " \t");
    n = first_word(rest);
    if (executable_in_path(rest, n) || word_in(rest, n, shell_builtins)) {
      *cmd = rest;
      return 1;
    }
    return 0;
  }
  n = first_word(text);
  if (word_in(text, n, prose_verbs))
    return 0;
  return executable_in_path(text, n) || word_in(text, n ? n : 1, shell_builtins);
}

enum err planner_offline(const struct cfg *cfg, const char *text,
                         char **plan_json, char *errbuf, size_t errlen)
{
  json_object *plan, *steps;
  char *t, *provider;
  const char *cmd;

  *plan_json = NULL;
  if (!text || strlen(text) > REQUEST_MAX) {
    snprintf(errbuf, errlen, "the request is empty or longer than %d characters", REQUEST_MAX);
    return ERR_INVAL;
  }
  if (!(t = strdup(text + strspn(text, " \t\n"))))
    return ERR_NOMEM;
  provider = route_provider(cfg, t);
  int command = is_command_line(t, &cmd);
  /* "git status of /srv/app" is prose that starts with a program name. */
  if (command && !looks_like_prose(cmd)) {
    steps = json_object_new_array();
    json_object_array_add(steps, command_step(cmd));
  } else {
    steps = keyword_steps(t);
    if (command && !json_object_array_length(steps))
      json_object_array_add(steps, command_step(cmd));
  }
  if (!json_object_array_length(steps)) {
    json_object_put(steps);
    snprintf(errbuf, errlen, "cannot plan this offline: '%.80s'. Try a command line "
             "(/task df -h) or words like disk, memory, uptime, processes, git status, "
             "pull, run tests, build, list files, read/delete PATH, check URL", t);
    free(t);
    free(provider);
    return ERR_UNSUPPORTED;
  }
  for (size_t i = 0; provider && i < json_object_array_length(steps); i++)
    json_object_object_add(json_object_array_get_idx(steps, i), "provider",
                           json_object_new_string(provider));
  plan = json_object_new_object();
  json_object_object_add(plan, "summary", json_object_new_string(t));
  json_object_object_add(plan, "steps", steps);
  json_object_object_add(plan, "risk", json_object_new_string("READ_ONLY"));
  *plan_json = strdup(json_object_to_json_string_ext(plan, JSON_C_TO_STRING_PLAIN));
  json_object_put(plan);
  free(t);
  free(provider);
  return *plan_json ? ERR_OK : ERR_NOMEM;
}
