/* engine/persona.c — loading personas and rendering their templates. */
#include "persona.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "buf.h"
#include "log.h"

#define PERSONA_FILE_MAX (256 * 1024)
#define RENDER_MAX (256 * 1024)
#define MAX_VARS 16

struct persona_builtin {
  const char *name;
  const char *yaml;
};
extern const struct persona_builtin persona_builtins[];   /* personas_gen.c */

static const struct persona_template_def defs[] = {
  {"help", ""},
  {"menu", ""},
  {"refusal", ""},
  {"chat_offline", ""},
  {"unknown_command", "command"},
  {"too_long", "max"},
  {"rate_limited", ""},
  {"usage_task", ""},
  {"planning", "id"},
  {"plan", "id,state,risk,summary,steps"},
  {"approval", "id,risk,reason"},
  {"denied", "id,reason"},
  {"plan_failed", "id,reason"},
  {"proposal", "id,risk,summary,steps"},
  {"result", "id,state,exit,elapsed,reason,output"},
  {"failure", "id,state,exit,elapsed,reason,output"},
  {"alert", "text"},
  {"model_fallback", "reason"},
  {"model_down", "reason"},
  {"budget_spent", "used,budget"},
  {"model_status", "model,today,chat,budget"},
  {"job_tokens", "tokens"},
  {"no_job", "id"},
  {"not_awaiting", "id,state"},
  {"may_not_approve", "id,risk,who"},
  {"may_not_deny", "id"},
  {"no_longer_awaiting", "id"},
  {"approved", "id,actor"},
  {"denied_by", "id,actor"},
  {"usage", "usage"},
  {"already_ended", "id"},
  {"cancelling", "id"},
  {"status_header", ""},
  {"list_header", ""},
  {"no_jobs", ""},
  {"button_not_allowed", ""},
  {"button_no_job", "id"},
  {"button_not_awaiting", "id,state"},
  {"button_may_not_approve", "id,risk"},
  {"button_approved", "id"},
  {"button_denied", "id"},
  {"button_unknown", ""},
  {"button_slow_down", ""},
  {"progress", "id,step,steps,bar,elapsed,what"},
  {"status_task", "text,risk"},
  {"heading_history", ""},
  {"heading_workers", ""},
  {"heading_providers", ""},
  {"heading_artifacts", ""},
  {"memory_unavailable", ""},
  {"initiative_unavailable", ""},
};
#define N_DEFS (sizeof defs / sizeof defs[0])

struct persona {
  char *name;
  char *tone;
  char *system;
  char *tpl[N_DEFS];
};

const struct persona_template_def *persona_template_defs(size_t *n)
{
  *n = N_DEFS;
  return defs;
}

void persona_free(struct persona *p)
{
  if (!p)
    return;
  free(p->name);
  free(p->tone);
  free(p->system);
  for (size_t i = 0; i < N_DEFS; i++)
    free(p->tpl[i]);
  free(p);
}

const char *persona_name(const struct persona *p) { return p->name; }
const char *persona_tone(const struct persona *p) { return p->tone ? p->tone : ""; }
const char *persona_system(const struct persona *p) { return p->system; }

static int def_index(const char *key)
{
  for (size_t i = 0; i < N_DEFS; i++)
    if (strcmp(defs[i].key, key) == 0)
      return (int)i;
  return -1;
}

/* 1 when placeholder name[0..len) is allowed for template i. */
static int var_allowed(size_t i, const char *name, size_t len)
{
  const char *v = defs[i].vars;

  if (len == 4 && strncmp(name, "name", 4) == 0)
    return 1;
  while (*v) {
    size_t n = strcspn(v, ",");
    if (n == len && strncmp(v, name, len) == 0)
      return 1;
    v += n + (v[n] == ',');
  }
  return 0;
}

/* Every {{x}} in t must be allowed for template i. */
static int check_template(size_t i, const char *t, char *bad, size_t n)
{
  const char *p = t, *q;

  while ((p = strstr(p, "{{"))) {
    if (!(q = strstr(p + 2, "}}"))) {
      snprintf(bad, n, "unclosed '{{'");
      return 0;
    }
    if (!var_allowed(i, p + 2, (size_t)(q - p - 2))) {
      snprintf(bad, n, "unknown placeholder {{%.*s}} (allowed: name%s%s)", (int)(q - p - 2) > 40 ? 40 : (int)(q - p - 2),
               p + 2, *defs[i].vars ? "," : "", defs[i].vars);
      return 0;
    }
    p = q + 2;
  }
  return 1;
}

static const char *scalar(yaml_document_t *d, yaml_node_t *n)
{
  (void)d;
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

enum err persona_parse(const char *yaml, size_t len, const char *origin,
                       struct persona **out, char *why, size_t n)
{
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_node_t *root;
  struct persona *p = NULL;
  enum err e = ERR_CONFIG;
  char bad[160];

  *out = NULL;
  if (len > PERSONA_FILE_MAX) {
    snprintf(why, n, "persona '%s': larger than %d bytes", origin, PERSONA_FILE_MAX);
    return ERR_CONFIG;
  }
  if (!yaml_parser_initialize(&parser))
    return ERR_NOMEM;
  yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
  if (!yaml_parser_load(&parser, &doc)) {
    snprintf(why, n, "persona '%s': line %zu: %s", origin, parser.problem_mark.line + 1,
             parser.problem ? parser.problem : "bad YAML");
    yaml_parser_delete(&parser);
    return ERR_CONFIG;
  }
  root = yaml_document_get_root_node(&doc);
  if (!root || root->type != YAML_MAPPING_NODE) {
    snprintf(why, n, "persona '%s': expected a mapping at the top", origin);
    goto out;
  }
  if (!(p = calloc(1, sizeof *p))) {
    e = ERR_NOMEM;
    goto out;
  }
  for (yaml_node_pair_t *kv = root->data.mapping.pairs.start;
       kv < root->data.mapping.pairs.top; kv++) {
    const char *k = scalar(&doc, yaml_document_get_node(&doc, kv->key));
    yaml_node_t *vn = yaml_document_get_node(&doc, kv->value);
    const char *v = scalar(&doc, vn);
    char **slot = NULL;

    if (!k) {
      snprintf(why, n, "persona '%s': keys must be text", origin);
      goto out;
    }
    if (strcmp(k, "name") == 0)
      slot = &p->name;
    else if (strcmp(k, "tone") == 0)
      slot = &p->tone;
    else if (strcmp(k, "system_prompt") == 0)
      slot = &p->system;
    else if (strcmp(k, "templates") == 0) {
      if (!vn || vn->type != YAML_MAPPING_NODE) {
        snprintf(why, n, "persona '%s': templates: expected a mapping", origin);
        goto out;
      }
      for (yaml_node_pair_t *t = vn->data.mapping.pairs.start; t < vn->data.mapping.pairs.top; t++) {
        const char *tk = scalar(&doc, yaml_document_get_node(&doc, t->key));
        const char *tv = scalar(&doc, yaml_document_get_node(&doc, t->value));
        int i = tk ? def_index(tk) : -1;
        if (i < 0) {
          snprintf(why, n, "persona '%s': templates.%.60s: unknown template", origin,
                   tk ? tk : "?");
          goto out;
        }
        if (!tv) {
          snprintf(why, n, "persona '%s': templates.%s: expected text", origin, tk);
          goto out;
        }
        if (!check_template((size_t)i, tv, bad, sizeof bad)) {
          snprintf(why, n, "persona '%s': templates.%s: %s", origin, tk, bad);
          goto out;
        }
        free(p->tpl[i]);
        if (!(p->tpl[i] = strdup(tv))) {
          e = ERR_NOMEM;
          goto out;
        }
        /* A block scalar ends in a newline that no message wants. */
        for (size_t l = strlen(p->tpl[i]); l && (p->tpl[i][l - 1] == '\n' || p->tpl[i][l - 1] == ' ');)
          p->tpl[i][--l] = 0;
      }
      continue;
    } else {
      snprintf(why, n, "persona '%s': %.60s: unknown key", origin, k);
      goto out;
    }
    if (!v || !*v) {
      snprintf(why, n, "persona '%s': %s: expected text", origin, k);
      goto out;
    }
    free(*slot);
    if (!(*slot = strdup(v))) {
      e = ERR_NOMEM;
      goto out;
    }
  }
  if (!p->name || !p->system) {
    snprintf(why, n, "persona '%s': %s: missing", origin, !p->name ? "name" : "system_prompt");
    goto out;
  }
  for (size_t i = 0; i < N_DEFS; i++)
    if (!p->tpl[i]) {
      snprintf(why, n, "persona '%s': templates.%s: missing", origin, defs[i].key);
      goto out;
    }
  *out = p;
  p = NULL;
  e = ERR_OK;
out:
  persona_free(p);
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  return e;
}

static enum err load_file(const char *path, struct persona **out, char *why, size_t n)
{
  FILE *f = fopen(path, "rb");
  struct buf b = BUF_INIT(PERSONA_FILE_MAX + 1);
  char chunk[4096];
  size_t got;
  enum err e = ERR_OK;

  if (!f)
    return ERR_NOTFOUND;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
    if ((e = buf_append(&b, chunk, got)))
      break;
  fclose(f);
  if (e) {
    snprintf(why, n, "persona '%s': larger than %d bytes", path, PERSONA_FILE_MAX);
    buf_release(&b);
    return ERR_CONFIG;
  }
  e = persona_parse(buf_str(&b), b.len, path, out, why, n);
  buf_release(&b);
  return e;
}

enum err persona_load(const char *name, const char *home, struct persona **out, char *why,
                      size_t n)
{
  char path[4096];
  size_t len;
  enum err e;

  *out = NULL;
  if (!name || !*name)
    name = "skynet";
  len = strlen(name);
  if (strchr(name, '/') || (len > 5 && strcmp(name + len - 5, ".yaml") == 0)) {
    e = load_file(name, out, why, n);
    if (e == ERR_NOTFOUND)
      snprintf(why, n, "persona '%s': cannot open the file", name);
    return e == ERR_NOTFOUND ? ERR_CONFIG : e;
  }
  for (const char *c = name; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-')) {
      snprintf(why, n, "persona: '%.60s' is neither a name ([a-z0-9_-]) nor a file path", name);
      return ERR_CONFIG;
    }
  if (home) {
    snprintf(path, sizeof path, "%s/persona/%s.yaml", home, name);
    if ((e = load_file(path, out, why, n)) != ERR_NOTFOUND)
      return e;
  }
  snprintf(path, sizeof path, "%s/%s.yaml", SKYNET_PERSONA_DIR, name);
  if ((e = load_file(path, out, why, n)) != ERR_NOTFOUND)
    return e;
  for (const struct persona_builtin *b = persona_builtins; b->name; b++)
    if (strcmp(b->name, name) == 0)
      return persona_parse(b->yaml, strlen(b->yaml), name, out, why, n);
  snprintf(why, n, "persona '%s': not found (looked in %s/persona, %s and the built-in ones)",
           name, home ? home : "$SKYNET_HOME", SKYNET_PERSONA_DIR);
  return ERR_CONFIG;
}

/* ---- rendering ----------------------------------------------------------- */

static struct persona *current;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static struct persona *builtin;

static void load_builtin(void)
{
  char why[256];

  for (const struct persona_builtin *b = persona_builtins; b->name; b++)
    if (strcmp(b->name, "skynet") == 0 &&
        persona_parse(b->yaml, strlen(b->yaml), "skynet", &builtin, why, sizeof why))
      log_error("persona", "%s", why);
}

const struct persona *persona_current(void)
{
  if (current)
    return current;
  pthread_once(&builtin_once, load_builtin);
  return builtin;
}

void persona_set_current(struct persona *p)
{
  persona_free(current);
  current = p;
}

char *persona_render(const struct persona *p, const char *key, ...)
{
  va_list ap;
  char *s;

  va_start(ap, key);
  s = persona_vrender(p, key, ap);
  va_end(ap);
  return s;
}

char *persona_vrender(const struct persona *p, const char *key, va_list ap)
{
  const char *names[MAX_VARS], *vals[MAX_VARS];
  struct buf b = BUF_INIT(RENDER_MAX);
  size_t nv = 0;
  int i;

  for (const char *k; nv < MAX_VARS && (k = va_arg(ap, const char *));) {
    names[nv] = k;
    vals[nv++] = va_arg(ap, const char *);
  }
  if (!p || (i = def_index(key)) < 0) {
    buf_appends(&b, key);
    return buf_detach(&b);
  }
  for (const char *t = p->tpl[i], *q; *t;) {
    const char *o = strstr(t, "{{");
    if (!o || !(q = strstr(o + 2, "}}"))) {
      buf_appends(&b, t);
      break;
    }
    buf_append(&b, t, (size_t)(o - t));
    size_t len = (size_t)(q - o - 2);
    if (len == 4 && strncmp(o + 2, "name", 4) == 0)
      buf_appends(&b, p->name);
    else
      for (size_t k = 0; k < nv; k++)
        if (strlen(names[k]) == len && strncmp(names[k], o + 2, len) == 0) {
          buf_appends(&b, vals[k] ? vals[k] : "");
          break;
        }
    t = q + 2;
  }
  return buf_detach(&b);
}
