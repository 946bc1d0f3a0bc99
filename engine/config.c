/* engine/config.c — loads SKYNET's configuration (SPEC §3).
 *
 * DESIGN
 * Loading runs in four passes over one struct cfg: built-in defaults, the
 * YAML file, the environment, then the derived values (home, database URL,
 * LLM provider, the "local" provider) and cross-checks.  Env wins over the
 * file; derived defaults come last so that SKYNET_HOME moves the default
 * database and GEMINI_API_KEY in either source picks the LLM.
 *
 * The file is read whole (at most 1 MiB) and turned into a small tree with
 * libyaml's event parser, then the tree is walked against a table of known
 * keys.  Building the tree first keeps the schema walk free of parser state
 * and lets every error name the full key path and its line.  The tree is
 * bounded: nesting depth, node count, and the file size cap everything a
 * hostile file could make us allocate.  Aliases are refused rather than
 * expanded (no billion-laughs); anchors and tags are ignored.
 *
 * Nothing here is thread-safe; cfg_load runs on the main thread before any
 * other starts, and the loaded cfg is read-only afterwards. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "buf.h"

#define CFG_FILE_MAX (1024 * 1024)
#define YAML_DEPTH_MAX 32
#define YAML_NODES_MAX 100000
#define PROVIDERS_MAX 256
#define PROVIDER_OPTS_MAX 64
#define WORKERS_MAX 1024
#define OUTPUT_MAX_MAX (1024LL * 1024 * 1024)
#define ARCHIVE_MAX_MAX (1024LL * 1024 * 1024 * 1024)
/* Values echoed in error messages are clipped: they may be secrets put under
 * the wrong key. */
#define ECHO_MAX 40

/* ---- the YAML tree ------------------------------------------------------ */

enum ykind { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
  enum ykind kind;
  int line;               /* 1-based */
  int null;               /* plain "", "~" or "null" */
  char *text;             /* scalars */
  struct ynode **kids;    /* sequences: items; mappings: key, value, ... */
  size_t n, cap;
};

/* What a load is doing: the cfg being filled and where errors go. */
struct ld {
  struct cfg *c;
  const char *file;       /* for messages */
  char *errbuf;
  size_t errlen;
  size_t nodes;
  unsigned char seen[64]; /* schema keys already given, see keys[] */
};

static enum err fail(struct ld *ld, enum err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum err fail(struct ld *ld, enum err e, const char *fmt, ...)
{
  va_list ap;

  if (ld->errbuf && ld->errlen) {
    va_start(ap, fmt);
    vsnprintf(ld->errbuf, ld->errlen, fmt, ap);
    va_end(ap);
  }
  return e;
}

static enum err fail_nomem(struct ld *ld)
{
  return fail(ld, ERR_NOMEM, "out of memory loading the configuration");
}

/* s clipped to ECHO_MAX bytes for an error message. */
static const char *clip(const char *s, char *tmp, size_t len)
{
  if (strlen(s) <= ECHO_MAX)
    return s;
  snprintf(tmp, len, "%.*s...", ECHO_MAX, s);
  return tmp;
}

static void ynode_free(struct ynode *n)
{
  if (!n)
    return;
  for (size_t i = 0; i < n->n; i++)
    ynode_free(n->kids[i]);
  free(n->kids);
  free(n->text);
  free(n);
}

static enum err ynode_add(struct ynode *parent, struct ynode *kid)
{
  struct ynode **grown;
  size_t cap;

  if (parent->n == parent->cap) {
    cap = parent->cap ? parent->cap * 2 : 8;
    grown = realloc(parent->kids, cap * sizeof(*grown));
    if (!grown)
      return ERR_NOMEM;
    parent->kids = grown;
    parent->cap = cap;
  }
  parent->kids[parent->n++] = kid;
  return ERR_OK;
}

static enum err yaml_fail(struct ld *ld, yaml_parser_t *p)
{
  if (p->error == YAML_MEMORY_ERROR)
    return fail_nomem(ld);
  return fail(ld, ERR_CONFIG, "bad YAML in '%s' at line %lu: %s", ld->file,
              (unsigned long)p->problem_mark.line + 1,
              p->problem ? p->problem : "syntax error");
}

static enum err yaml_next(struct ld *ld, yaml_parser_t *p, yaml_event_t *ev)
{
  if (!yaml_parser_parse(p, ev))
    return yaml_fail(ld, p);
  return ERR_OK;
}

static int plain_null(const yaml_event_t *ev)
{
  const char *v = (const char *)ev->data.scalar.value;

  if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return 0;
  return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
         !strcmp(v, "NULL");
}

static enum err ynode_new(struct ld *ld, enum ykind kind, int line,
                          struct ynode **out)
{
  if (++ld->nodes > YAML_NODES_MAX)
    return fail(ld, ERR_CONFIG, "too many YAML nodes in '%s' at line %d",
                ld->file, line);
  *out = calloc(1, sizeof(**out));
  if (!*out)
    return fail_nomem(ld);
  (*out)->kind = kind;
  (*out)->line = line;
  return ERR_OK;
}

static enum err scalar_node(struct ld *ld, const yaml_event_t *ev, int line,
                            struct ynode **out)
{
  size_t len = ev->data.scalar.length;
  enum err e;

  if (memchr(ev->data.scalar.value, '\0', len))
    return fail(ld, ERR_CONFIG, "NUL byte in a value in '%s' at line %d",
                ld->file, line);
  e = ynode_new(ld, Y_SCALAR, line, out);
  if (e)
    return e;
  (*out)->null = plain_null(ev);
  (*out)->text = strndup((const char *)ev->data.scalar.value, len);
  if (!(*out)->text)
    return fail_nomem(ld);
  return ERR_OK;
}

static enum err build_node(struct ld *ld, yaml_parser_t *p,
                           const yaml_event_t *ev, int depth,
                           struct ynode **out);

/* Reads the children of a sequence or mapping up to its end event. */
static enum err build_kids(struct ld *ld, yaml_parser_t *p, struct ynode *n,
                           yaml_event_type_t end, int depth)
{
  yaml_event_t ev;
  struct ynode *kid;
  enum err e;

  for (;;) {
    e = yaml_next(ld, p, &ev);
    if (e)
      return e;
    if (ev.type == end) {
      yaml_event_delete(&ev);
      return ERR_OK;
    }
    kid = NULL;
    e = build_node(ld, p, &ev, depth + 1, &kid);
    yaml_event_delete(&ev);
    if (!e && n->kind == Y_MAP && n->n % 2 == 0 && kid->kind != Y_SCALAR)
      e = fail(ld, ERR_CONFIG, "key at line %d of '%s' must be a plain string",
               kid->line, ld->file);
    if (!e && ynode_add(n, kid))
      e = fail_nomem(ld);
    if (e) {
      ynode_free(kid);
      return e;
    }
  }
}

static enum err build_node(struct ld *ld, yaml_parser_t *p,
                           const yaml_event_t *ev, int depth,
                           struct ynode **out)
{
  int line = (int)ev->start_mark.line + 1;
  enum err e;

  if (depth > YAML_DEPTH_MAX)
    return fail(ld, ERR_CONFIG, "YAML nested too deep in '%s' at line %d",
                ld->file, line);
  switch (ev->type) {
  case YAML_SCALAR_EVENT:
    return scalar_node(ld, ev, line, out);
  case YAML_SEQUENCE_START_EVENT:
    e = ynode_new(ld, Y_SEQ, line, out);
    return e ? e : build_kids(ld, p, *out, YAML_SEQUENCE_END_EVENT, depth);
  case YAML_MAPPING_START_EVENT:
    e = ynode_new(ld, Y_MAP, line, out);
    return e ? e : build_kids(ld, p, *out, YAML_MAPPING_END_EVENT, depth);
  case YAML_ALIAS_EVENT:
    return fail(ld, ERR_CONFIG, "unsupported alias '*%.40s' in '%s' at line %d",
                (const char *)ev->data.alias.anchor, ld->file, line);
  default:
    return fail(ld, ERR_CONFIG, "unexpected YAML structure in '%s' at line %d",
                ld->file, line);
  }
}

/* Expects one event type next; anything else is a structure error. */
static enum err expect(struct ld *ld, yaml_parser_t *p, yaml_event_t *ev,
                       yaml_event_type_t type)
{
  enum err e = yaml_next(ld, p, ev);

  if (!e && ev->type != type) {
    e = fail(ld, ERR_CONFIG, "more than one YAML document in '%s' at line %lu",
             ld->file, (unsigned long)ev->start_mark.line + 1);
    yaml_event_delete(ev);
  }
  return e;
}

/* The one document of the stream, or *root = NULL for an empty file. */
static enum err parse_stream(struct ld *ld, yaml_parser_t *p,
                             struct ynode **root)
{
  yaml_event_t ev;
  enum err e;

  e = expect(ld, p, &ev, YAML_STREAM_START_EVENT);
  if (e)
    return e;
  yaml_event_delete(&ev);
  e = yaml_next(ld, p, &ev);
  if (e || ev.type == YAML_STREAM_END_EVENT)
    goto out;
  yaml_event_delete(&ev);
  e = yaml_next(ld, p, &ev);
  if (e)
    return e;
  e = build_node(ld, p, &ev, 0, root);
  yaml_event_delete(&ev);
  if (!e)
    e = expect(ld, p, &ev, YAML_DOCUMENT_END_EVENT);
  if (e)
    return e;
  yaml_event_delete(&ev);
  e = expect(ld, p, &ev, YAML_STREAM_END_EVENT);
out:
  if (!e)
    yaml_event_delete(&ev);
  return e;
}

static enum err parse_yaml(struct ld *ld, const char *data, size_t len,
                           struct ynode **root)
{
  yaml_parser_t p;
  enum err e;

  *root = NULL;
  if (!yaml_parser_initialize(&p))
    return fail_nomem(ld);
  yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
  e = parse_stream(ld, &p, root);
  yaml_parser_delete(&p);
  if (e) {
    ynode_free(*root);
    *root = NULL;
  }
  return e;
}

/* ---- reading the file --------------------------------------------------- */

static enum err read_file(struct ld *ld, const char *path, struct buf *b)
{
  char chunk[16384];
  size_t n;
  enum err e = ERR_OK;
  FILE *f = fopen(path, "r");

  if (!f)
    return fail(ld, ERR_IO, "cannot open '%s': %s", path, strerror(errno));
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    e = buf_append(b, chunk, n);
    if (e == ERR_TOOBIG) {
      e = fail(ld, ERR_CONFIG, "config file '%s' is too big: over %d bytes",
               path, CFG_FILE_MAX);
      goto out;
    }
    if (e) {
      e = fail_nomem(ld);
      goto out;
    }
  }
  if (ferror(f))
    e = fail(ld, ERR_IO, "cannot read '%s': %s", path, strerror(errno));
out:
  fclose(f);
  return e;
}

/* ---- values ------------------------------------------------------------- */

/* Where a value came from, for messages: "key 'workers'" and " in 'f' at
 * line 3", or "variable 'SKYNET_WORKERS'" and "". */
struct at {
  char subject[192];
  char where[320];
};

static void at_key(struct at *at, const struct ld *ld, const char *path,
                   int line)
{
  snprintf(at->subject, sizeof(at->subject), "key '%s'", path);
  snprintf(at->where, sizeof(at->where), " in '%s' at line %d", ld->file,
           line);
}

static void at_env(struct at *at, const char *name)
{
  snprintf(at->subject, sizeof(at->subject), "variable '%s'", name);
  at->where[0] = '\0';
}

static enum err bad_value(struct ld *ld, const struct at *at, const char *must,
                          const char *got)
{
  char tmp[ECHO_MAX + 8];

  return fail(ld, ERR_CONFIG, "%s must be %s, got '%s'%s", at->subject, must,
              clip(got, tmp, sizeof(tmp)), at->where);
}

static const char *kind_name(const struct ynode *n)
{
  return n->kind == Y_MAP ? "a mapping" : n->kind == Y_SEQ ? "a list" : "";
}

/* Non-scalar values are reported by kind, scalars by their text. */
static enum err bad_node(struct ld *ld, const struct at *at, const char *must,
                         const struct ynode *n)
{
  if (n->kind != Y_SCALAR)
    return fail(ld, ERR_CONFIG, "%s must be %s, got %s%s", at->subject, must,
                kind_name(n), at->where);
  return bad_value(ld, at, must, n->text);
}

/* Strict decimal: no blanks, no trailing text, no overflow. */
static enum err parse_ll(const char *s, long long *out)
{
  char *end;
  long long v;

  if (!*s || isspace((unsigned char)*s))
    return ERR_PARSE;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (end == s || *end)
    return ERR_PARSE;
  if (errno == ERANGE)
    return ERR_TOOBIG;
  *out = v;
  return ERR_OK;
}

static enum err parse_ranged(struct ld *ld, const struct at *at, const char *s,
                             long long min, long long max, long long *out)
{
  const char *must = min > 0 ? "a positive integer" : "a non-negative integer";
  char tmp[ECHO_MAX + 8];
  enum err e = parse_ll(s, out);

  if (e == ERR_PARSE || (!e && *out < min && min <= 1))
    return bad_value(ld, at, must, s);
  if (e || *out < min || *out > max)
    return fail(ld, ERR_CONFIG, "%s is out of range (%lld..%lld), got '%s'%s",
                at->subject, min, max, clip(s, tmp, sizeof(tmp)), at->where);
  return ERR_OK;
}

static enum err set_str(struct ld *ld, char **field, const char *v)
{
  char *copy = NULL;

  if (v && *v && !(copy = strdup(v)))
    return fail_nomem(ld);
  free(*field);
  *field = copy;
  return ERR_OK;
}

/* Base URLs are joined with "/path" by their users. */
static void strip_slashes(char *url)
{
  size_t len = url ? strlen(url) : 0;

  while (len > 1 && url[len - 1] == '/' && url[len - 2] != '/')
    url[--len] = '\0';
}

static enum err check_llm(struct ld *ld, const struct at *at, const char *v)
{
  if (strcmp(v, "gemini") && strcmp(v, "openai") && strcmp(v, "offline"))
    return bad_value(ld, at, "one of gemini, openai, offline", v);
  return ERR_OK;
}

static enum err check_level(struct ld *ld, const struct at *at, const char *v,
                            enum log_level *out)
{
  int l = log_level_parse(v);

  if (l < 0)
    return bad_value(ld, at, "one of debug, info, warn, error", v);
  *out = (enum log_level)l;
  return ERR_OK;
}

static enum err check_format(struct ld *ld, const struct at *at, const char *v,
                             int *out)
{
  if (!strcmp(v, "json"))
    *out = 1;
  else if (!strcmp(v, "text"))
    *out = 0;
  else if (!strcmp(v, "auto"))
    *out = -1;
  else
    return bad_value(ld, at, "one of text, json, auto", v);
  return ERR_OK;
}

/* ---- lists ----------------------------------------------------------- */

static enum err ids_push(struct ld *ld, int64_t **ids, size_t *n, int64_t v)
{
  int64_t *grown = realloc(*ids, (*n + 1) * sizeof(**ids));

  if (!grown)
    return fail_nomem(ld);
  grown[(*n)++] = v;
  *ids = grown;
  return ERR_OK;
}

static enum err strs_push(struct ld *ld, char ***strs, size_t *n, const char *v)
{
  char **grown = realloc(*strs, (*n + 1) * sizeof(**strs));

  if (!grown)
    return fail_nomem(ld);
  *strs = grown;
  if (!(grown[*n] = strdup(v)))
    return fail_nomem(ld);
  (*n)++;
  return ERR_OK;
}

static void strs_free(char **strs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free(strs[i]);
  free(strs);
}

static enum err parse_id(struct ld *ld, const struct at *at, const char *s,
                         int64_t **ids, size_t *n)
{
  long long v;
  enum err e = parse_ll(s, &v);

  if (e == ERR_TOOBIG)
    return fail(ld, ERR_CONFIG, "%s holds an out-of-range user id '%.40s'%s",
                at->subject, s, at->where);
  if (e)
    return bad_value(ld, at, "a list of integer user ids", s);
  return ids_push(ld, ids, n, (int64_t)v);
}

/* ---- the schema --------------------------------------------------------- */

enum kkind {
  K_SECTION, K_STR, K_URL, K_IDS, K_STRS, K_INT, K_SIZE, K_LEVEL, K_FORMAT,
  K_LLM, K_PROVIDERS, K_BOOL
};

struct key_spec {
  const char *path;
  enum kkind kind;
  size_t off;             /* the field; for lists the array */
  size_t off_n;           /* for lists, the count */
  long long min, max;     /* for numbers */
};

#define F(field) offsetof(struct cfg, field)
static const struct key_spec keys[] = {
  {"home", K_STR, F(home), 0, 0, 0},
  {"telegram", K_SECTION, 0, 0, 0, 0},
  {"telegram.token", K_STR, F(telegram_token), 0, 0, 0},
  {"telegram.api_base", K_URL, F(telegram_api_base), 0, 0, 0},
  {"telegram.allowed_users", K_IDS, F(allowed_users), F(n_allowed_users), 0, 0},
  {"telegram.admins", K_IDS, F(admins), F(n_admins), 0, 0},
  {"telegram.poll_timeout_s", K_INT, F(telegram_poll_timeout_s), 0, 1, 600},
  {"telegram.rate_global_per_s", K_INT, F(telegram_rate_global_per_s), 0, 1, 1000},
  {"telegram.rate_chat_per_s", K_INT, F(telegram_rate_chat_per_s), 0, 1, 100},
  {"telegram.rate_group_per_min", K_INT, F(telegram_rate_group_per_min), 0, 1, 6000},
  {"telegram.tls_resume", K_BOOL, F(telegram_tls_resume), 0, 0, 0},
  {"database", K_SECTION, 0, 0, 0, 0},
  {"database.url", K_STR, F(database_url), 0, 0, 0},
  {"llm", K_SECTION, 0, 0, 0, 0},
  {"llm.provider", K_LLM, F(llm_provider), 0, 0, 0},
  {"llm.model", K_STR, F(llm_model), 0, 0, 0},
  {"llm.gemini_api_key", K_STR, F(gemini_api_key), 0, 0, 0},
  {"llm.gemini_base_url", K_URL, F(gemini_base_url), 0, 0, 0},
  {"llm.openai_api_key", K_STR, F(openai_api_key), 0, 0, 0},
  {"llm.openai_base_url", K_URL, F(openai_base_url), 0, 0, 0},
  {"llm.timeout_s", K_INT, F(llm_timeout_s), 0, 1, 600},
  {"llm.max_retries", K_INT, F(llm_max_retries), 0, 0, 10},
  {"llm.daily_token_budget", K_INT, F(llm_daily_token_budget), 0, 0, INT_MAX},
  {"llm.history_tokens", K_INT, F(llm_history_tokens), 0, 100, 100000},
  {"http", K_SECTION, 0, 0, 0, 0},
  {"http.listen", K_STR, F(http_listen), 0, 0, 0},
  {"http.api_keys", K_STRS, F(api_keys), F(n_api_keys), 0, 0},
  {"workers", K_INT, F(workers), 0, 0, WORKERS_MAX},
  {"log", K_SECTION, 0, 0, 0, 0},
  {"log.level", K_LEVEL, F(log_level), 0, 0, 0},
  {"log.format", K_FORMAT, F(log_json), 0, 0, 0},
  {"persona", K_STR, F(persona), 0, 0, 0},
  {"timeouts", K_SECTION, 0, 0, 0, 0},
  {"timeouts.job_s", K_INT, F(job_timeout_s), 0, 1, INT_MAX},
  {"timeouts.step_s", K_INT, F(step_timeout_s), 0, 1, INT_MAX},
  {"timeouts.kill_grace_ms", K_INT, F(kill_grace_ms), 0, 1, INT_MAX},
  {"timeouts.shutdown_grace_s", K_INT, F(shutdown_grace_s), 0, 1, INT_MAX},
  {"output_max", K_SIZE, F(output_max), 0, 1, OUTPUT_MAX_MAX},
  {"archive", K_SECTION, 0, 0, 0, 0},
  {"archive.max_bytes", K_SIZE, F(archive_max_bytes), 0, 1, ARCHIVE_MAX_MAX},
  {"queue", K_SECTION, 0, 0, 0, 0},
  {"queue.lease_ms", K_INT, F(lease_ms), 0, 500, 3600000},
  {"queue.max_attempts", K_INT, F(max_attempts), 0, 1, 100},
  {"queue.backoff_ms", K_INT, F(backoff_ms), 0, 0, 3600000},
  {"providers", K_PROVIDERS, 0, 0, 0, 0},
};
#undef F
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(N_KEYS <= 64, "struct ld.seen is too small for keys[]");

static void *field(struct cfg *c, size_t off)
{
  return (char *)c + off;
}

static enum err apply_scalar(struct ld *ld, const struct key_spec *k,
                             const struct at *at, const char *v)
{
  long long n;
  enum err e;

  switch (k->kind) {
  case K_LLM:
    if ((e = check_llm(ld, at, v)))
      return e;
    return set_str(ld, field(ld->c, k->off), v);
  case K_URL:
    e = set_str(ld, field(ld->c, k->off), v);
    strip_slashes(*(char **)field(ld->c, k->off));
    return e;
  case K_LEVEL:
    return check_level(ld, at, v, field(ld->c, k->off));
  case K_FORMAT:
    return check_format(ld, at, v, field(ld->c, k->off));
  case K_BOOL:
    if (strcmp(v, "true") && strcmp(v, "false"))
      return bad_value(ld, at, "true or false", v);
    *(int *)field(ld->c, k->off) = !strcmp(v, "true");
    return ERR_OK;
  case K_INT:
    if ((e = parse_ranged(ld, at, v, k->min, k->max, &n)))
      return e;
    *(int *)field(ld->c, k->off) = (int)n;
    return ERR_OK;
  case K_SIZE:
    if ((e = parse_ranged(ld, at, v, k->min, k->max, &n)))
      return e;
    *(size_t *)field(ld->c, k->off) = (size_t)n;
    return ERR_OK;
  default:
    return set_str(ld, field(ld->c, k->off), v);
  }
}

static enum err apply_ids(struct ld *ld, const struct key_spec *k,
                          const struct at *at, const struct ynode *v)
{
  int64_t **ids = field(ld->c, k->off);
  size_t *n = field(ld->c, k->off_n);
  enum err e = ERR_OK;

  if (v->kind != Y_SEQ && !v->null)
    return bad_node(ld, at, "a list of integer user ids", v);
  for (size_t i = 0; v->kind == Y_SEQ && i < v->n && !e; i++) {
    if (v->kids[i]->kind != Y_SCALAR)
      return bad_node(ld, at, "a list of integer user ids", v->kids[i]);
    e = parse_id(ld, at, v->kids[i]->text, ids, n);
  }
  return e;
}

static enum err apply_strs(struct ld *ld, const struct key_spec *k,
                           const struct at *at, const struct ynode *v)
{
  char ***strs = field(ld->c, k->off);
  size_t *n = field(ld->c, k->off_n);
  enum err e = ERR_OK;

  if (v->kind != Y_SEQ && !v->null)
    return bad_node(ld, at, "a list of strings", v);
  for (size_t i = 0; v->kind == Y_SEQ && i < v->n && !e; i++) {
    const struct ynode *item = v->kids[i];
    if (item->kind != Y_SCALAR || item->null || !*item->text)
      return bad_node(ld, at, "a list of non-empty strings", item);
    e = strs_push(ld, strs, n, item->text);
  }
  return e;
}

static enum err walk_map(struct ld *ld, const struct ynode *map,
                         const char *prefix);
static enum err walk_providers(struct ld *ld, const struct ynode *map);

static enum err apply(struct ld *ld, const struct key_spec *k,
                      const struct ynode *v)
{
  struct at at;

  at_key(&at, ld, k->path, v->line);
  switch (k->kind) {
  case K_SECTION:
    if (v->null)
      return ERR_OK;
    if (v->kind != Y_MAP)
      return bad_node(ld, &at, "a mapping", v);
    return walk_map(ld, v, k->path);
  case K_PROVIDERS:
    if (v->null)
      return ERR_OK;
    if (v->kind != Y_MAP)
      return bad_node(ld, &at, "a mapping", v);
    return walk_providers(ld, v);
  case K_IDS:
    return apply_ids(ld, k, &at, v);
  case K_STRS:
    return apply_strs(ld, k, &at, v);
  default:
    if (v->kind != Y_SCALAR)
      return bad_node(ld, &at, "a single value", v);
    /* Empty means "not set", as for environment variables. */
    if (v->null || !*v->text)
      return ERR_OK;
    return apply_scalar(ld, k, &at, v->text);
  }
}

static const struct key_spec *find_key(const char *path)
{
  for (size_t i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].path, path))
      return &keys[i];
  return NULL;
}

/* A key's full dotted path; keys holding dots are never schema keys. */
static int key_path(char *out, size_t len, const char *prefix, const char *key)
{
  int n;

  if (strchr(key, '.'))
    return -1;
  n = prefix ? snprintf(out, len, "%s.%s", prefix, key)
             : snprintf(out, len, "%s", key);
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

static enum err walk_map(struct ld *ld, const struct ynode *map,
                         const char *prefix)
{
  char path[128], tmp[ECHO_MAX + 8];
  const struct key_spec *k;
  enum err e;

  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const struct ynode *key = map->kids[i];
    k = key_path(path, sizeof(path), prefix, key->text) ? NULL
                                                         : find_key(path);
    if (!k)
      return fail(ld, ERR_CONFIG, "unknown key '%s%s%s' in '%s' at line %d",
                  prefix ? prefix : "", prefix ? "." : "",
                  clip(key->text, tmp, sizeof(tmp)), ld->file, key->line);
    if (ld->seen[k - keys]++)
      return fail(ld, ERR_CONFIG, "duplicate key '%s' in '%s' at line %d",
                  path, ld->file, key->line);
    if ((e = apply(ld, k, map->kids[i + 1])))
      return e;
  }
  return ERR_OK;
}

/* ---- providers ---------------------------------------------------------- */

static const char *const provider_types[] = {
  "local", "sandbox", "ssh", "docker", "gateway", "mock",
};

static int provider_type_known(const char *t)
{
  for (size_t i = 0; i < sizeof(provider_types) / sizeof(*provider_types); i++)
    if (!strcmp(provider_types[i], t))
      return 1;
  return 0;
}

/* Chat names providers in words, so names stay simple words. */
static int provider_name_ok(const char *s)
{
  size_t len = strlen(s);

  if (len == 0 || len > 64)
    return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
      return 0;
  return 1;
}

static void provider_release(struct cfg_provider *p)
{
  free(p->name);
  free(p->type);
  for (size_t i = 0; i < p->n_opts; i++) {
    free(p->opts[i].key);
    free(p->opts[i].value);
  }
  free(p->opts);
}

static enum err provider_add(struct ld *ld, const char *name, const char *type,
                             struct cfg_provider **out)
{
  struct cfg *c = ld->c;
  struct cfg_provider *grown, *p;

  grown = realloc(c->providers, (c->n_providers + 1) * sizeof(*grown));
  if (!grown)
    return fail_nomem(ld);
  c->providers = grown;
  p = &grown[c->n_providers];
  memset(p, 0, sizeof(*p));
  c->n_providers++;
  p->name = strdup(name);
  p->type = strdup(type);
  if (!p->name || !p->type)
    return fail_nomem(ld);
  if (out)
    *out = p;
  return ERR_OK;
}

static enum err provider_opt_add(struct ld *ld, struct cfg_provider *p,
                                 const char *key, const char *value)
{
  struct cfg_kv *grown = realloc(p->opts, (p->n_opts + 1) * sizeof(*grown));

  if (!grown)
    return fail_nomem(ld);
  p->opts = grown;
  grown[p->n_opts].key = strdup(key);
  grown[p->n_opts].value = strdup(value);
  p->n_opts++;
  if (!grown[p->n_opts - 1].key || !grown[p->n_opts - 1].value)
    return fail_nomem(ld);
  return ERR_OK;
}

/* The instance's "type", checked; NULL after a failure. */
static const struct ynode *provider_type(struct ld *ld, const char *name,
                                         const struct ynode *map, enum err *e)
{
  char path[160];
  struct at at;

  snprintf(path, sizeof(path), "providers.%s.type", name);
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const struct ynode *v = map->kids[i + 1];
    if (strcmp(map->kids[i]->text, "type"))
      continue;
    at_key(&at, ld, path, v->line);
    if (v->kind != Y_SCALAR || !provider_type_known(v->text)) {
      *e = bad_node(ld, &at,
                    "one of local, sandbox, ssh, docker, gateway, mock", v);
      return NULL;
    }
    return v;
  }
  *e = fail(ld, ERR_CONFIG, "missing key '%s' in '%s' at line %d", path,
            ld->file, map->line);
  return NULL;
}

static enum err provider_opts(struct ld *ld, struct cfg_provider *p,
                              const struct ynode *map)
{
  char path[160];
  struct at at;
  int types = 0;
  enum err e;

  if (map->n / 2 > PROVIDER_OPTS_MAX)
    return fail(ld, ERR_CONFIG, "provider '%s' has more than %d options in "
                "'%s' at line %d", p->name, PROVIDER_OPTS_MAX, ld->file,
                map->line);
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const char *key = map->kids[i]->text;
    const struct ynode *v = map->kids[i + 1];
    snprintf(path, sizeof(path), "providers.%s.%.40s", p->name, key);
    at_key(&at, ld, path, v->line);
    if (!strcmp(key, "type") && types++ == 0)
      continue;
    if (types > 1 || cfg_provider_opt(p, key))
      return fail(ld, ERR_CONFIG, "duplicate key '%s'%s", path, at.where);
    if (v->kind != Y_SCALAR)
      return bad_node(ld, &at, "a single value", v);
    if ((e = provider_opt_add(ld, p, key, v->null ? "" : v->text)))
      return e;
  }
  return ERR_OK;
}

static enum err walk_provider(struct ld *ld, const struct ynode *key,
                              const struct ynode *v)
{
  char path[160], tmp[ECHO_MAX + 8];
  const struct ynode *type;
  struct cfg_provider *p;
  struct at at;
  enum err e = ERR_OK;

  snprintf(path, sizeof(path), "providers.%s", clip(key->text, tmp, sizeof(tmp)));
  at_key(&at, ld, path, key->line);
  if (!provider_name_ok(key->text))
    return fail(ld, ERR_CONFIG, "%s is not a valid provider name (letters, "
                "digits, '-' and '_')%s", at.subject, at.where);
  if (cfg_provider_find(ld->c, key->text))
    return fail(ld, ERR_CONFIG, "duplicate key '%s'%s", path, at.where);
  if (v->kind != Y_MAP)
    return bad_node(ld, &at, "a mapping with a 'type'", v);
  if (!(type = provider_type(ld, key->text, v, &e)))
    return e;
  if ((e = provider_add(ld, key->text, type->text, &p)))
    return e;
  return provider_opts(ld, p, v);
}

static enum err walk_providers(struct ld *ld, const struct ynode *map)
{
  struct at at;
  enum err e;

  if (map->n / 2 > PROVIDERS_MAX)
    return fail(ld, ERR_CONFIG, "more than %d providers in '%s' at line %d",
                PROVIDERS_MAX, ld->file, map->line);
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const struct ynode *key = map->kids[i], *v = map->kids[i + 1];
    if (!strcmp(key->text, "isolate_write")) {
      at_key(&at, ld, "providers.isolate_write", v->line);
      if (v->kind != Y_SCALAR || v->null ||
          (strcmp(v->text, "true") && strcmp(v->text, "false")))
        return bad_node(ld, &at, "true or false", v);
      ld->c->isolate_write = !strcmp(v->text, "true");
      continue;
    }
    if (strcmp(key->text, "default")) {
      if ((e = walk_provider(ld, key, v)))
        return e;
      continue;
    }
    at_key(&at, ld, "providers.default", v->line);
    if (v->kind != Y_SCALAR || v->null || !*v->text)
      return bad_node(ld, &at, "a provider name", v);
    if ((e = set_str(ld, &ld->c->default_provider, v->text)))
      return e;
  }
  return ERR_OK;
}

/* ---- the file ---------------------------------------------------------- */

/* The explicit path, else $SKYNET_CONFIG, else ./skynet.yaml if present. */
static const char *config_path(const char *path)
{
  const char *env = getenv("SKYNET_CONFIG");
  struct stat st;

  if (path && *path)
    return path;
  if (env && *env)
    return env;
  if (stat("skynet.yaml", &st) == 0)
    return "skynet.yaml";
  return NULL;
}

static enum err load_file(struct ld *ld, const char *path)
{
  struct buf data = BUF_INIT(CFG_FILE_MAX);
  struct ynode *root = NULL;
  enum err e;

  ld->file = path;
  e = read_file(ld, path, &data);
  if (e)
    goto out;
  e = parse_yaml(ld, buf_str(&data), data.len, &root);
  if (e || !root || root->null)
    goto out;
  if (root->kind != Y_MAP) {
    e = fail(ld, ERR_CONFIG, "config file '%s' must hold a mapping of keys, "
             "got %s", path, root->kind == Y_SEQ ? "a list" : "a value");
    goto out;
  }
  e = walk_map(ld, root, NULL);
out:
  ynode_free(root);
  buf_release(&data);
  return e;
}

/* ---- the environment --------------------------------------------------- */

/* Empty variables count as unset. */
static const char *env(const char *name)
{
  const char *v = getenv(name);

  return v && *v ? v : NULL;
}

static const struct {
  const char *name;
  size_t off;
  int url;
} env_strs[] = {
  {"TELEGRAM_BOT_TOKEN", offsetof(struct cfg, telegram_token), 0},
  {"SKYNET_TELEGRAM_API", offsetof(struct cfg, telegram_api_base), 1},
  {"SKYNET_DATABASE_URL", offsetof(struct cfg, database_url), 0},
  {"SKYNET_HOME", offsetof(struct cfg, home), 0},
  {"GEMINI_API_KEY", offsetof(struct cfg, gemini_api_key), 0},
  {"GEMINI_BASE_URL", offsetof(struct cfg, gemini_base_url), 1},
  {"OPENAI_API_KEY", offsetof(struct cfg, openai_api_key), 0},
  {"OPENAI_BASE_URL", offsetof(struct cfg, openai_base_url), 1},
  {"SKYNET_LLM_MODEL", offsetof(struct cfg, llm_model), 0},
  {"SKYNET_HTTP_LISTEN", offsetof(struct cfg, http_listen), 0},
};

/* Comma-separated ids; blanks around items and empty items are ignored. */
static enum err env_ids(struct ld *ld, const char *name, int64_t **ids,
                        size_t *n)
{
  const char *v = env(name), *p;
  char item[64];
  struct at at;
  enum err e = ERR_OK;

  if (!v)
    return ERR_OK;
  at_env(&at, name);
  free(*ids);
  *ids = NULL;
  *n = 0;
  for (p = v; *p && !e; p += *p == ',') {
    size_t len = strcspn(p, ",");
    const char *s = p, *end = p + len;
    while (s < end && isspace((unsigned char)*s))
      s++;
    while (end > s && isspace((unsigned char)end[-1]))
      end--;
    p += len;
    if (s == end)
      continue;
    if ((size_t)(end - s) >= sizeof(item))
      return bad_value(ld, &at, "a comma-separated list of integer user ids", s);
    snprintf(item, sizeof(item), "%.*s", (int)(end - s), s);
    e = parse_id(ld, &at, item, ids, n);
  }
  return e;
}

static enum err env_keys(struct ld *ld, const char *name, char ***strs,
                         size_t *n)
{
  const char *v = env(name), *p;
  char *item;
  enum err e = ERR_OK;

  if (!v)
    return ERR_OK;
  strs_free(*strs, *n);
  *strs = NULL;
  *n = 0;
  for (p = v; *p && !e; p += *p == ',') {
    size_t len = strcspn(p, ",");
    const char *s = p, *end = p + len;
    while (s < end && isspace((unsigned char)*s))
      s++;
    while (end > s && isspace((unsigned char)end[-1]))
      end--;
    p += len;
    if (s == end)
      continue;
    if (!(item = strndup(s, (size_t)(end - s))))
      return fail_nomem(ld);
    e = strs_push(ld, strs, n, item);
    free(item);
  }
  return e;
}

/* SKYNET_LOG holds a level, a format, or both: "debug", "json", "debug,json". */
static enum err env_log(struct ld *ld)
{
  const char *v = env("SKYNET_LOG"), *p;
  char item[32];
  struct at at;
  enum err e = ERR_OK;

  if (!v)
    return ERR_OK;
  at_env(&at, "SKYNET_LOG");
  for (p = v; *p && !e; p += *p == ',') {
    size_t len = strcspn(p, ",");
    snprintf(item, sizeof(item), "%.*s", (int)len, p);
    p += len;
    if (log_level_parse(item) >= 0)
      e = check_level(ld, &at, item, &ld->c->log_level);
    else if (!strcmp(item, "json") || !strcmp(item, "text") ||
             !strcmp(item, "auto"))
      e = check_format(ld, &at, item, &ld->c->log_json);
    else
      e = bad_value(ld, &at, "a log level (debug, info, warn, error) and/or "
                    "format (text, json)", v);
  }
  return e;
}

static enum err env_scalars(struct ld *ld)
{
  const char *v;
  long long n;
  struct at at;
  enum err e;

  for (size_t i = 0; i < sizeof(env_strs) / sizeof(*env_strs); i++) {
    if (!(v = env(env_strs[i].name)))
      continue;
    char **f = field(ld->c, env_strs[i].off);
    if ((e = set_str(ld, f, v)))
      return e;
    if (env_strs[i].url)
      strip_slashes(*f);
  }
  if ((v = env("SKYNET_LLM"))) {
    at_env(&at, "SKYNET_LLM");
    if ((e = check_llm(ld, &at, v)) ||
        (e = set_str(ld, &ld->c->llm_provider, v)))
      return e;
  }
  if ((v = env("SKYNET_WORKERS"))) {
    at_env(&at, "SKYNET_WORKERS");
    if ((e = parse_ranged(ld, &at, v, 0, WORKERS_MAX, &n)))
      return e;
    ld->c->workers = (int)n;
  }
  return ERR_OK;
}

static enum err load_env(struct ld *ld)
{
  struct cfg *c = ld->c;
  enum err e;

  if ((e = env_scalars(ld)) || (e = env_log(ld)))
    return e;
  if ((e = env_ids(ld, "SKYNET_ALLOWED_USERS", &c->allowed_users,
                   &c->n_allowed_users)))
    return e;
  if ((e = env_ids(ld, "SKYNET_ADMINS", &c->admins, &c->n_admins)))
    return e;
  return env_keys(ld, "SKYNET_API_KEYS", &c->api_keys, &c->n_api_keys);
}

/* ---- defaults and derived values ---------------------------------------- */

static enum err set_defaults(struct ld *ld)
{
  struct cfg *c = ld->c;

  c->workers = 2;
  c->llm_timeout_s = 60;
  c->llm_max_retries = 3;
  c->llm_daily_token_budget = 0;
  c->llm_history_tokens = 1500;
  c->log_level = LOGL_INFO;
  c->log_json = -1;
  c->job_timeout_s = 3600;
  c->step_timeout_s = 300;
  c->kill_grace_ms = 2000;
  c->shutdown_grace_s = 10;
  c->output_max = 65536;
  c->archive_max_bytes = 100 * 1024 * 1024;
  c->isolate_write = 1;
  c->lease_ms = 30000;
  c->max_attempts = 3;
  c->backoff_ms = 1000;
  c->telegram_poll_timeout_s = 50;
  c->telegram_tls_resume = 1;
  c->telegram_rate_global_per_s = 30;
  c->telegram_rate_chat_per_s = 1;
  c->telegram_rate_group_per_min = 20;
  if (set_str(ld, &c->telegram_api_base, "https://api.telegram.org") ||
      set_str(ld, &c->gemini_base_url,
              "https://generativelanguage.googleapis.com") ||
      set_str(ld, &c->persona, "skynet") ||
      set_str(ld, &c->default_provider, "local"))
    return ERR_NOMEM;
  return ERR_OK;
}

/* "~" and "~/x" in home mean $HOME, as in a shell. */
static enum err home_path(struct ld *ld, char *out, size_t len)
{
  const char *home = env("HOME"), *xdg = env("XDG_DATA_HOME");
  const char *h = ld->c->home;
  int tilde = h && h[0] == '~' && (!h[1] || h[1] == '/');
  int n;

  if (h && tilde && home)
    n = snprintf(out, len, "%s%s", home, h + 1);
  else if (h)
    n = snprintf(out, len, "%s", h);
  else if (xdg)
    n = snprintf(out, len, "%s/skynet", xdg);
  else if (home)
    n = snprintf(out, len, "%s/.local/share/skynet", home);
  else
    return fail(ld, ERR_CONFIG, "cannot find key 'home': set SKYNET_HOME, "
                "XDG_DATA_HOME or HOME");
  if (n < 0 || (size_t)n >= len)
    return fail(ld, ERR_CONFIG, "key 'home' is too long");
  return ERR_OK;
}

/* mkdir -p with mode 0700 for every directory it creates. */
static int mkdir_p(char *path)
{
  struct stat st;

  for (char *s = path + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    int r = mkdir(path, 0700);
    *s = '/';
    if (r && errno != EEXIST)
      return -1;
  }
  if (mkdir(path, 0700) && errno != EEXIST)
    return -1;
  if (stat(path, &st))
    return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

static enum err make_home(struct ld *ld)
{
  char path[4096];
  enum err e = home_path(ld, path, sizeof(path));

  if (e)
    return e;
  if (mkdir_p(path))
    return fail(ld, ERR_CONFIG, "cannot create key 'home' directory '%s': %s",
                path, strerror(errno));
  return set_str(ld, &ld->c->home, path);
}

static enum err derive(struct ld *ld)
{
  struct cfg *c = ld->c;
  char url[4200];
  const char *llm = "offline";
  enum err e;

  if ((e = make_home(ld)))
    return e;
  if (!c->database_url) {
    snprintf(url, sizeof(url), "sqlite://%s/skynet.db", c->home);
    if ((e = set_str(ld, &c->database_url, url)))
      return e;
  }
  if (c->gemini_api_key)
    llm = "gemini";
  else if (c->openai_api_key || c->openai_base_url)
    llm = "openai";
  if (!c->llm_provider && (e = set_str(ld, &c->llm_provider, llm)))
    return e;
  if (!cfg_provider_find(c, "local") &&
      (e = provider_add(ld, "local", "local", NULL)))
    return e;
  if (!cfg_provider_find(c, c->default_provider))
    return fail(ld, ERR_CONFIG, "key 'providers.default' names unknown "
                "provider '%s'", c->default_provider);
  return ERR_OK;
}

/* ---- secrets ------------------------------------------------------------ */

static int hexval(int ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Registers s[0..len) and, when it is percent-encoded, its decoded form. */
static void add_secret_span(const char *s, size_t len)
{
  char raw[512], dec[512];
  size_t j = 0;

  if (len == 0 || len >= sizeof(raw))
    return;
  snprintf(raw, sizeof(raw), "%.*s", (int)len, s);
  log_add_secret(raw);
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (raw[i] == '%' && i + 2 < len && (hi = hexval(raw[i + 1])) >= 0 &&
        (lo = hexval(raw[i + 2])) >= 0) {
      dec[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      dec[j++] = raw[i];
    }
  }
  dec[j] = '\0';
  log_add_secret(dec);
}

/* postgresql://user:PASSWORD@host/db and ...?password=PASSWORD */
static void add_url_password(const char *url)
{
  const char *rest, *at = NULL, *colon, *q;
  size_t auth;

  if (strncmp(url, "postgresql://", 13) && strncmp(url, "postgres://", 11))
    return;
  rest = strstr(url, "://") + 3;
  auth = strcspn(rest, "/?#");
  for (size_t i = 0; i < auth; i++)
    if (rest[i] == '@')
      at = rest + i;
  colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
  if (colon)
    add_secret_span(colon + 1, (size_t)(at - colon - 1));
  if ((q = strstr(url, "password=")))
    add_secret_span(q + 9, strcspn(q + 9, "&"));
}

static void register_secrets(const struct cfg *c)
{
  log_add_secret(c->telegram_token);
  log_add_secret(c->gemini_api_key);
  log_add_secret(c->openai_api_key);
  for (size_t i = 0; i < c->n_api_keys; i++)
    log_add_secret(c->api_keys[i]);
  add_url_password(c->database_url);
  /* Provider options that hold credentials (a gateway's bearer token). */
  for (size_t i = 0; i < c->n_providers; i++)
    for (size_t k = 0; k < c->providers[i].n_opts; k++) {
      const char *key = c->providers[i].opts[k].key;
      if (strstr(key, "token") || strstr(key, "password") || strstr(key, "secret") ||
          strstr(key, "api_key"))
        log_add_secret(c->providers[i].opts[k].value);
    }
}

/* ---- public ------------------------------------------------------------- */

enum err cfg_load(struct cfg *c, const char *path, char *errbuf, size_t errlen)
{
  struct ld ld = {.c = c, .errbuf = errbuf, .errlen = errlen};
  const char *file;
  enum err e;

  memset(c, 0, sizeof(*c));
  if (errbuf && errlen)
    errbuf[0] = '\0';
  if ((e = set_defaults(&ld))) {
    e = fail_nomem(&ld);
    goto out;
  }
  file = config_path(path);
  if ((e = set_str(&ld, &c->source, file ? file : "defaults")))
    goto out;
  if (file && (e = load_file(&ld, file)))
    goto out;
  if ((e = load_env(&ld)) || (e = derive(&ld)))
    goto out;
  register_secrets(c);
out:
  if (e)
    cfg_release(c);
  return e;
}

void cfg_release(struct cfg *c)
{
  if (!c)
    return;
  free(c->source);
  free(c->home);
  free(c->telegram_token);
  free(c->telegram_api_base);
  free(c->allowed_users);
  free(c->admins);
  free(c->database_url);
  free(c->llm_provider);
  free(c->llm_model);
  free(c->gemini_api_key);
  free(c->gemini_base_url);
  free(c->openai_api_key);
  free(c->openai_base_url);
  free(c->http_listen);
  strs_free(c->api_keys, c->n_api_keys);
  free(c->persona);
  free(c->default_provider);
  for (size_t i = 0; i < c->n_providers; i++)
    provider_release(&c->providers[i]);
  free(c->providers);
  memset(c, 0, sizeof(*c));
}

const struct cfg_provider *cfg_provider_find(const struct cfg *c,
                                             const char *name)
{
  for (size_t i = 0; c && name && i < c->n_providers; i++)
    if (!strcmp(c->providers[i].name, name))
      return &c->providers[i];
  return NULL;
}

const char *cfg_provider_opt(const struct cfg_provider *p, const char *key)
{
  for (size_t i = 0; p && key && i < p->n_opts; i++)
    if (!strcmp(p->opts[i].key, key))
      return p->opts[i].value;
  return NULL;
}

static int ids_has(const int64_t *ids, size_t n, int64_t id)
{
  for (size_t i = 0; i < n; i++)
    if (ids[i] == id)
      return 1;
  return 0;
}

/* Admins may always command: approving work they could not ask for would be
 * odd, and listing them twice is easy to forget. */
int cfg_is_allowed(const struct cfg *c, int64_t user_id)
{
  return ids_has(c->allowed_users, c->n_allowed_users, user_id) ||
         ids_has(c->admins, c->n_admins, user_id);
}

int cfg_is_admin(const struct cfg *c, int64_t user_id)
{
  return ids_has(c->admins, c->n_admins, user_id);
}

char *cfg_sqlite_path(const char *url)
{
  if (!url || strncmp(url, "sqlite://", 9) || !url[9])
    return NULL;
  return strdup(url + 9);
}
