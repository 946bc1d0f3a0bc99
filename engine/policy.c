/* engine/policy.c — how risky one concrete argv is (SPEC §5).
 *
 * DESIGN
 * The orchestrator runs exactly the argv a plan step names, so the policy
 * engine judges that argv, never the model's description of it.  A verdict
 * only ever goes up: every rule that fires raises it with a reason, and on a
 * tie the first reason stays, so chat names the first command that reached
 * the final level.
 *
 *   judge_cmd   one simple command: program name → row of the rule table →
 *               the row's argument check.  Wrappers (sudo, env, nice,
 *               timeout, xargs…) are peeled off in a loop and the inner
 *               command is judged as well.  A row's base risk is the risk of
 *               its most harmless use; its check raises it for the rest.
 *   sh_*        `sh -c SCRIPT`: a small tokenizer (quotes, escapes, $( ),
 *               backticks, <( ), here-documents, redirections) splits the
 *               script into simple commands, each judged by judge_cmd; every
 *               pipeline is watched for a downloader feeding an interpreter.
 *   path_*      lexical path normalisation (., .., //, ~, $HOME) so that
 *               `rm -rf /tmp/../` is seen as `rm -rf /`.
 *
 * Nothing here runs anything or looks at the file system: the rules are
 * lexical, so wherever a value is only known at run time they lean to the
 * higher risk.  Nesting (shells, substitutions, find -exec) is bounded by
 * POLICY_MAX_DEPTH and scripts by POLICY_MAX_SCRIPT; the only heap use is a
 * script's token arena, freed before returning.  Thread-safe: all state is
 * on the stack. */
#include "policy.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  POLICY_MAX_DEPTH = 8,           /* nested sh -c, $( ), find -exec … */
  POLICY_MAX_SCRIPT = 64 * 1024,  /* longer scripts are not analysed */
  POLICY_PATH = 4096,             /* longer paths are not normalised */
  POLICY_MAX_FUNCS = 256,         /* function definitions checked for bombs */
};

/* What the tokenizer knows about a word of a script. */
enum {
  W_EXPAND = 1,   /* holds $VAR, $( ) or backticks: value known at run time */
  W_GLOB = 2,     /* holds an unquoted * ? [ */
  W_DL = 4,       /* holds a substitution whose output is downloaded */
  W_ROUT = 8,     /* target of an output redirection, not an argument */
  W_RIN = 16,     /* target of an input redirection */
  W_NOARG = 32,   /* here-string: not an argument */
};

/* One simple command.  argv is not NULL-terminated: argc counts it. */
struct cmd {
  const char *const *argv;
  const unsigned char *fl;   /* W_* per word; NULL for a literal argv */
  int argc;
  int depth;
};

/* The write scope being collected by policy_write_scope() on this thread,
 * else NULL: judging is the same either way, this only listens. */
struct scope_collect {
  struct policy_scope *out;
};
static _Thread_local struct scope_collect *tl_scope;

static void scope_note_write(const char *abs);
static void scope_note_cmd(const struct cmd *c, const char *name);

typedef void (*check_fn)(const struct cmd *c, struct policy_verdict *v);
/* A wrapper returns the argv index of the command it runs, 0 for none. */
typedef int (*unwrap_fn)(const struct cmd *c, struct policy_verdict *v);

enum {
  F_TEXT = 1,   /* arguments are text, not file names */
  F_CODE = 2,   /* runs code given in arguments or on stdin */
};

struct rule {
  const char *name;
  enum risk risk;     /* risk of the most harmless use */
  const char *why;    /* "<name> <why>" is the reason at that risk */
  check_fn check;     /* raises the risk from the arguments; may be NULL */
  unwrap_fn unwrap;   /* for wrappers; may be NULL */
  unsigned flags;     /* F_* */
};

/* Subcommand-driven programs: the first row whose list holds the word. */
struct sub_rule {
  const char *subs;   /* space-separated; NULL in the default (last) row */
  enum risk risk;
  const char *why;
};

static void judge_cmd(const struct cmd *c, struct policy_verdict *v);
static void script_judge(const char *s, size_t n, int depth, struct policy_verdict *v,
                         bool *dl);

/* ---- verdicts and words ------------------------------------------------ */

static void v_init(struct policy_verdict *v)
{
  v->risk = RISK_READ_ONLY;
  v->reason[0] = '\0';
}

static void v_raise(struct policy_verdict *v, enum risk r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Raises v to r.  On a tie the earlier reason stays: it names the first
 * command that reached this level. */
static void v_raise(struct policy_verdict *v, enum risk r, const char *fmt, ...)
{
  va_list ap;

  if (r < v->risk || (r == v->risk && v->reason[0]))
    return;
  va_start(ap, fmt);
  vsnprintf(v->reason, sizeof v->reason, fmt, ap);
  va_end(ap);
  v->risk = r;
}

static bool streq(const char *a, const char *b)
{
  return strcmp(a, b) == 0;
}

static bool starts(const char *s, const char *prefix)
{
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends(const char *s, const char *suffix)
{
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether the n bytes at w are one of the space-separated words of list. */
static bool in_wordsn(const char *list, const char *w, size_t n)
{
  const char *p = list;

  while (n && *p) {
    size_t len = strcspn(p, " ");
    if (len == n && strncmp(p, w, n) == 0)
      return true;
    p += len;
    p += *p == ' ';
  }
  return false;
}

static bool in_words(const char *list, const char *w)
{
  return in_wordsn(list, w, strlen(w));
}

static const char *base_name(const char *p)
{
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static unsigned wfl(const struct cmd *c, int i)
{
  return c->fl ? c->fl[i] : 0u;
}

static struct cmd cmd_shift(const struct cmd *c, int k)
{
  struct cmd s = *c;

  s.argv += k;
  if (s.fl)
    s.fl += k;
  s.argc -= k;
  return s;
}

/* ---- options ----------------------------------------------------------- */

/* getopt_long in miniature: clusters (-sSLo FILE), --name=value, options
 * after operands (GNU style) and "--" ending them. */
struct opts {
  const struct cmd *c;
  const char *takes;     /* short options that take a value */
  const char *ltakes;    /* long options (space-separated) that do */
  int i;
  const char *cluster;
  bool ended;
};

struct opt {
  char s;                /* short option, or 0 */
  char l[32];            /* long option without "--", or "" */
  const char *val;       /* its value, or NULL */
  const char *operand;   /* an operand, or NULL */
  int idx;               /* argv index of the operand */
};

static void opts_init(struct opts *o, const struct cmd *c, int from, const char *takes,
                      const char *ltakes)
{
  o->c = c;
  o->takes = takes ? takes : "";
  o->ltakes = ltakes ? ltakes : "";
  o->i = from;
  o->cluster = NULL;
  o->ended = false;
}

static const char *opts_value(struct opts *o)
{
  return o->i < o->c->argc ? o->c->argv[o->i++] : "";
}

static bool opts_short(struct opts *o, struct opt *a)
{
  a->s = *o->cluster++;
  if (!strchr(o->takes, a->s))
    return true;
  a->val = *o->cluster ? o->cluster : opts_value(o);
  o->cluster = NULL;
  return true;
}

static bool opts_long(struct opts *o, const char *w, struct opt *a)
{
  const char *eq = strchr(w, '=');
  size_t n = eq ? (size_t)(eq - w) : strlen(w);

  if (n >= sizeof a->l)
    n = sizeof a->l - 1;
  memcpy(a->l, w, n);
  a->l[n] = '\0';
  if (eq)
    a->val = eq + 1;
  else if (in_words(o->ltakes, a->l))
    a->val = opts_value(o);
  return true;
}

static bool opts_next(struct opts *o, struct opt *a)
{
  memset(a, 0, sizeof *a);
  if (o->cluster && *o->cluster)
    return opts_short(o, a);
  while (o->i < o->c->argc) {
    const char *w = o->c->argv[o->i++];
    if (o->ended || w[0] != '-' || w[1] == '\0') {
      a->operand = w;
      a->idx = o->i - 1;
      return true;
    }
    if (w[1] != '-') {
      o->cluster = w + 1;
      return opts_short(o, a);
    }
    if (w[2] == '\0') {
      o->ended = true;
      continue;
    }
    return opts_long(o, w + 2, a);
  }
  return false;
}

/* Whether one of the short options or long options (space-separated) is given. */
static bool has_opt(const struct cmd *c, const char *takes, const char *ltakes,
                    const char *shorts, const char *longs)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, takes, ltakes);
  while (opts_next(&o, &a)) {
    if (a.s && shorts && strchr(shorts, a.s))
      return true;
    if (a.l[0] && longs && in_words(longs, a.l))
      return true;
  }
  return false;
}

/* argv index of the first operand at or after from, 0 if none. */
static int first_operand(const struct cmd *c, int from, const char *takes, const char *ltakes)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, from, takes, ltakes);
  while (opts_next(&o, &a))
    if (a.operand)
      return a.idx;
  return 0;
}

static int count_operands(const struct cmd *c, const char *takes, const char *ltakes)
{
  struct opts o;
  struct opt a;
  int n = 0;

  opts_init(&o, c, 1, takes, ltakes);
  while (opts_next(&o, &a))
    n += a.operand != NULL;
  return n;
}

/* ---- paths ------------------------------------------------------------- */

enum pkind { P_REL, P_ABS, P_LONG };

static const char *const SYS_DIRS[] = {
  "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
  "/var/lib", "/var/log", "/var/spool", "/var/cache", "/var/backups", "/root", "/sys",
  "/proc", "/dev", "/snap", NULL,
};

static const char *const DISK_DEVS[] = {
  "/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd", "/dev/nvme", "/dev/mmcblk", "/dev/disk/",
  "/dev/mapper/", "/dev/dm-", "/dev/md", "/dev/loop", "/dev/sr", "/dev/nbd", "/dev/rbd",
  "/dev/zram", "/dev/mem", "/dev/kmem", "/dev/port", "/dev/root", NULL,
};

/* Directories whose removal takes the system (or a whole home) with it. */
static const char VITAL_TOP[] = "bin boot dev etc home lib lib32 lib64 libx32 media mnt "
                                "opt proc root run sbin snap srv sys usr var";

static bool path_under(const char *p, const char *dir)
{
  size_t n = strlen(dir);
  return strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

static bool path_under_any(const char *p, const char *const *dirs)
{
  for (; *dirs; dirs++)
    if (path_under(p, *dirs))
      return true;
  return false;
}

static bool starts_any(const char *p, const char *const *prefixes)
{
  for (; *prefixes; prefixes++)
    if (starts(p, *prefixes))
      return true;
  return false;
}

/* Length of the expansion ($VAR, ${…}, $(…), `…`) that s starts with. */
static size_t expansion_len(const char *s)
{
  const char *e = NULL;
  size_t i = 1;

  if (s[0] == '`')
    e = strchr(s + 1, '`');
  else if (s[1] == '(')
    e = strchr(s, ')');
  else if (s[1] == '{')
    e = strchr(s, '}');
  else if (s[1] && strchr("@*#?$!-0123456789", s[1]))
    return 2;
  else
    while (isalnum((unsigned char)s[i]) || s[i] == '_')
      i++;
  if (e)
    return (size_t)(e - s) + 1;
  return s[0] == '`' || s[1] == '(' || s[1] == '{' ? strlen(s) : i;
}

/* Writes what a leading ~, ~user, $HOME or ${HOME} stands for into out and
 * returns where the rest of in starts; "~" becomes /home/~ so that "~/.."
 * still lands on /home.  Another leading expansion is dropped and *dyn set:
 * its value is unknown and may be empty.  NULL if it does not fit. */
static const char *path_head(const char *in, char *out, size_t *n, bool *dyn)
{
  size_t ul;

  *n = 0;
  if (in[0] == '~') {
    ul = strcspn(in + 1, "/");
    if (ul > 255)
      return NULL;
    if (ul == 4 && strncmp(in + 1, "root", 4) == 0)
      *n = (size_t)snprintf(out, POLICY_PATH, "/root");
    else
      *n = (size_t)snprintf(out, POLICY_PATH, "/home/%.*s", ul ? (int)ul : 1, ul ? in + 1 : "~");
    return in + 1 + ul;
  }
  if ((starts(in, "$HOME") && !isalnum((unsigned char)in[5]) && in[5] != '_') ||
      starts(in, "${HOME}")) {
    *n = (size_t)snprintf(out, POLICY_PATH, "/home/~");
    return in + (in[1] == '{' ? 7 : 5);
  }
  if ((in[0] == '$' && in[1]) || in[0] == '`') {
    *dyn = true;
    return in + expansion_len(in);
  }
  return in;
}

/* Resolves ".", ".." and "//" of an absolute path, never above "/". */
static void path_lexical(const char *in, char *out)
{
  size_t o = 1;
  const char *p = in;

  out[0] = '/';
  while (*p) {
    while (*p == '/')
      p++;
    const char *s = p;
    while (*p && *p != '/')
      p++;
    size_t n = (size_t)(p - s);
    if (n == 0 || (n == 1 && s[0] == '.'))
      continue;
    if (n == 2 && s[0] == '.' && s[1] == '.') {
      while (o > 1 && out[o - 1] != '/')
        o--;
      o -= o > 1;
      continue;
    }
    if (o > 1)
      out[o++] = '/';
    memcpy(out + o, s, n);
    o += n;
  }
  out[o] = '\0';
}

static enum pkind path_norm(const char *in, char out[POLICY_PATH], bool *dyn)
{
  char tmp[POLICY_PATH];
  size_t n, rl;
  const char *rest;

  *dyn = false;
  rest = path_head(in, tmp, &n, dyn);
  if (!rest)
    return P_LONG;
  rl = strlen(rest);
  if (n + rl >= sizeof tmp)
    return P_LONG;
  memcpy(tmp + n, rest, rl + 1);
  if (tmp[0] != '/')
    return P_REL;
  path_lexical(tmp, out);
  return P_ABS;
}

static bool path_is_home(const char *p)
{
  return (starts(p, "/home/") && p[6] && !strchr(p + 6, '/')) || streq(p, "/root");
}

/* Whether removing p (normalised) takes the system, or with homes a whole
 * home directory, with it.  A glob at the top level may match anything. */
static bool path_vital(const char *p, bool homes)
{
  const char *second;

  if (streq(p, "/"))
    return true;
  second = strchr(p + 1, '/');
  if (!second && !homes && streq(p, "/root"))
    return false;
  if (!second)
    return in_words(VITAL_TOP, p + 1) || strpbrk(p + 1, "*?[") != NULL;
  if (homes && path_is_home(p))
    return true;
  return (starts(p, "/usr/") && !strchr(second + 1, '/')) || streq(p, "/var/lib");
}

/* p, or the directory that a trailing "*" empties. */
static bool path_hits_vital(const char *p, bool homes)
{
  const char *last = strrchr(p, '/');
  char parent[POLICY_PATH];
  size_t n;

  if (path_vital(p, homes))
    return true;
  if (!streq(last + 1, "*") && !streq(last + 1, ".*"))
    return false;
  n = last == p ? 1 : (size_t)(last - p);
  memcpy(parent, p, n);
  parent[n] = '\0';
  return path_vital(parent, homes);
}

/* Device files that swallow writes harmlessly. */
static bool path_sink(const char *p)
{
  return in_words("/dev/null /dev/zero /dev/full /dev/stdout /dev/stderr /dev/tty", p) ||
         starts(p, "/dev/fd/") || starts(p, "/dev/pts/") || starts(p, "/proc/self/fd/");
}

static bool path_secret_abs(const char *p)
{
  if (in_words("/etc/shadow /etc/shadow- /etc/gshadow /etc/gshadow- /etc/sudoers "
               "/proc/kcore /dev/mem /dev/kmem", p))
    return true;
  if (path_under(p, "/etc/sudoers.d") || path_under(p, "/etc/ssl/private") ||
      starts(p, "/root/"))
    return true;
  return starts(p, "/etc/ssh/ssh_host_") && !ends(p, ".pub");
}

/* Whether w names a file of secrets: passwords, private keys, tokens. */
static bool word_secret(const char *w)
{
  const char *b = base_name(w);
  char p[POLICY_PATH];
  bool dyn;

  if (ends(w, ".pem") || ends(w, ".key") ||
      in_words(".netrc .pgpass .git-credentials .vault-token", b))
    return true;
  if (strstr(w, ".ssh/") && (starts(b, "id_") || strpbrk(b, "*?[")) && !ends(b, ".pub"))
    return true;
  if (strstr(w, ".aws/credentials") || strstr(w, ".gnupg/"))
    return true;
  return path_norm(w, p, &dyn) == P_ABS && path_secret_abs(p);
}

/* Raises v for `who` writing (or deleting, moving…) path w. */
static void judge_write(const char *who, const char *verb, const char *w,
                        struct policy_verdict *v)
{
  char p[POLICY_PATH];
  bool dyn;
  enum pkind k = path_norm(w, p, &dyn);

  if (k == P_LONG)
    v_raise(v, RISK_ADMIN, "%s %s a path too long to check", who, verb);
  else if (k == P_REL)
    v_raise(v, RISK_WRITE, "%s %s '%.80s'", who, verb, w);
  else if (path_sink(p))
    return;
  else if (starts_any(p, DISK_DEVS))
    v_raise(v, RISK_BLOCKED, "%s on device '%.80s' destroys the disk", who, p);
  else if (streq(p, "/proc/sysrq-trigger"))
    v_raise(v, RISK_BLOCKED, "%s on '/proc/sysrq-trigger' can crash or reboot the host", who);
  else if (path_under(p, "/boot"))
    v_raise(v, RISK_BLOCKED, "%s %s '%.80s' and can leave the host unbootable", who, verb, p);
  else if (streq(p, "/") || path_under_any(p, SYS_DIRS))
    v_raise(v, RISK_ADMIN, "%s %s system path '%.80s'", who, verb, p);
  else {
    v_raise(v, RISK_WRITE, "%s %s '%.80s'", who, verb, w);
    if (tl_scope && !dyn)
      scope_note_write(p);
  }
}

/* Like judge_write, and a recursive removal (or move, or chmod -R) of a
 * vital directory is BLOCKED.  A path that is vital only when a variable
 * is empty (`rm -rf "$DIR/"`) needs an admin. */
static void judge_destroy(const char *who, const char *verb, const char *w, bool recursive,
                          bool homes, struct policy_verdict *v)
{
  char p[POLICY_PATH];
  bool dyn;

  if (recursive && path_norm(w, p, &dyn) == P_ABS && path_hits_vital(p, homes)) {
    if (dyn)
      v_raise(v, RISK_ADMIN, "%s on '%.80s' hits '%s' if the variable is empty", who, w, p);
    else if (path_is_home(p))
      v_raise(v, RISK_BLOCKED, "%s on '%.80s' wipes a home directory", who, w);
    else if (streq(w, p))
      v_raise(v, RISK_BLOCKED, "%s on '%.80s' destroys the system", who, w);
    else
      v_raise(v, RISK_BLOCKED, "%s on '%.80s' (that is '%.80s') destroys the system", who, w, p);
  }
  judge_write(who, verb, w, v);
}

/* ---- generic argument checks ------------------------------------------- */

static void write_operands(const struct cmd *c, const char *takes, const char *ltakes,
                           const char *verb, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, takes, ltakes);
  while (opts_next(&o, &a))
    if (a.operand)
      judge_write(base_name(c->argv[0]), verb, a.operand, v);
}

/* cp/ln/install: -t DIR, else the last of two or more operands. */
static void dest_operand(const struct cmd *c, const char *takes, const char *ltakes,
                         const char *verb, struct policy_verdict *v)
{
  const char *who = base_name(c->argv[0]), *last = NULL;
  struct opts o;
  struct opt a;
  int n = 0;
  bool t = false;

  opts_init(&o, c, 1, takes, ltakes);
  while (opts_next(&o, &a)) {
    if (a.s == 't' || streq(a.l, "target-directory")) {
      t = true;
      judge_write(who, verb, a.val ? a.val : "", v);
    } else if (a.operand) {
      last = a.operand;
      n++;
    }
  }
  if (!t && n >= 2)
    judge_write(who, verb, last, v);
}

static void judge_secrets(const struct cmd *c, const char *name, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++) {
    const char *w = c->argv[i], *eq = strchr(w, '=');
    if (word_secret(w + (w[0] == '@')) || (eq && word_secret(eq + 1 + (eq[1] == '@')))) {
      v_raise(v, RISK_ADMIN, "%s touches secret file '%.80s'", name, c->argv[i]);
      return;
    }
  }
}

static bool cmd_has_dl(const struct cmd *c)
{
  for (int i = 1; i < c->argc; i++)
    if (wfl(c, i) & W_DL)
      return true;
  return false;
}

static bool is_assignment(const char *w)
{
  size_t i = 1;

  if (!isalpha((unsigned char)w[0]) && w[0] != '_')
    return false;
  while (isalnum((unsigned char)w[i]) || w[i] == '_')
    i++;
  return w[i] == '=' || (w[i] == '+' && w[i + 1] == '=');
}

/* Variables that decide which program runs or what it loads. */
static const char DANGER_VARS[] =
    "PATH LD_PRELOAD LD_LIBRARY_PATH LD_AUDIT BASH_ENV ENV PROMPT_COMMAND IFS SHELLOPTS "
    "BASHOPTS PS4 GCONV_PATH PYTHONPATH PYTHONSTARTUP PERL5OPT PERL5LIB NODE_OPTIONS RUBYOPT "
    "GIT_SSH GIT_SSH_COMMAND GIT_EXEC_PATH GIT_CONFIG_PARAMETERS GIT_PAGER PAGER LESSOPEN "
    "SUDO_ASKPASS EDITOR VISUAL";

static void judge_assign(const char *w, struct policy_verdict *v)
{
  size_t n = strcspn(w, "+=");

  if (in_wordsn(DANGER_VARS, w, n))
    v_raise(v, RISK_WRITE, "setting %.*s changes what later commands run",
            (int)(n > 40 ? 40 : n), w);
}

/* eval, watch, ssh and su hand their words to a shell as one script. */
static void judge_joined(const struct cmd *c, int from, struct policy_verdict *v)
{
  size_t n = 0, at = 0;
  char *s;

  for (int i = from; i < c->argc && n <= POLICY_MAX_SCRIPT; i++)
    n += strlen(c->argv[i]) + 1;
  if (n == 0)
    return;
  if (n > POLICY_MAX_SCRIPT) {
    v_raise(v, RISK_BLOCKED, "script is too long to check");
    return;
  }
  if (!(s = malloc(n))) {
    v_raise(v, RISK_BLOCKED, "out of memory while checking a script");
    return;
  }
  for (int i = from; i < c->argc; i++) {
    size_t l = strlen(c->argv[i]);
    memcpy(s + at, c->argv[i], l);
    at += l;
    s[at++] = ' ';
  }
  s[at - 1] = '\0';
  script_judge(s, at - 1, c->depth + 1, v, NULL);
  free(s);
}

static void judge_sub(const char *prog, const char *sub, const struct sub_rule *t,
                      struct policy_verdict *v)
{
  while (t->subs && !in_words(t->subs, sub))
    t++;
  v_raise(v, t->risk, "%s %.40s %s", prog, sub, t->why);
}

static void judge_first_sub(const struct cmd *c, const char *takes, const char *ltakes,
                            const struct sub_rule *t, struct policy_verdict *v)
{
  int k = first_operand(c, 1, takes, ltakes);

  if (k > 0)
    judge_sub(base_name(c->argv[0]), c->argv[k], t, v);
}

/* ---- files: rm, mv, cp, chmod, dd … ------------------------------------ */

static void chk_rm(const struct cmd *c, struct policy_verdict *v)
{
  bool rec = has_opt(c, "", NULL, "rR", "recursive");
  struct opts o;
  struct opt a;

  if (has_opt(c, "", NULL, NULL, "no-preserve-root"))
    v_raise(v, RISK_BLOCKED, "rm --no-preserve-root exists only to delete '/'");
  opts_init(&o, c, 1, "", NULL);
  while (opts_next(&o, &a))
    if (a.operand)
      judge_destroy(rec ? "rm -r" : "rm", "deletes", a.operand, rec, true, v);
}

static void chk_unlink(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "", NULL, "deletes", v);
}

/* mv takes a directory away whole: no -r needed to empty /. */
static void chk_mv(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "tS", LT[] = "target-directory suffix";
  bool t = has_opt(c, T, LT, "t", "target-directory");
  int n = count_operands(c, T, LT), seen = 0;
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, T, LT);
  while (opts_next(&o, &a)) {
    if (!a.operand || (!t && n >= 2 && ++seen == n))
      continue;
    judge_destroy("mv", "moves", a.operand, true, true, v);
  }
  dest_operand(c, T, LT, "moves into", v);
}

static void chk_cp(const struct cmd *c, struct policy_verdict *v)
{
  dest_operand(c, "tS", "target-directory suffix", "writes", v);
}

static void chk_ln(const struct cmd *c, struct policy_verdict *v)
{
  dest_operand(c, "tS", "target-directory suffix", "creates a link at", v);
}

static void chk_install(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "gmoSt", LT[] = "group mode owner suffix target-directory";

  if (has_opt(c, T, LT, "d", "directory"))
    write_operands(c, T, LT, "creates", v);
  else
    dest_operand(c, T, LT, "installs into", v);
}

static void chk_rsync(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "efBTM", LT[] = "rsh filter block-size temp-dir remote-option";
  struct opts o;
  struct opt a;
  const char *last = NULL;
  int n = 0;

  opts_init(&o, c, 1, T, LT);
  while (opts_next(&o, &a))
    if (a.operand) {
      last = a.operand;
      n++;
    }
  if (n < 2)
    return;
  if (strchr(last, ':') && strcspn(last, ":") < strcspn(last, "/"))
    v_raise(v, RISK_WRITE, "rsync copies to another host");
  else if (has_opt(c, T, LT, NULL, "delete delete-before delete-during delete-after"))
    judge_destroy("rsync --delete", "mirrors into", last, true, true, v);
  else
    judge_write("rsync", "writes", last, v);
}

static void chk_mkdir(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "mZ", "mode context", "creates", v);
}

static void chk_rmdir(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "", NULL, "removes", v);
}

static void chk_touch(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "dtr", "date reference", "touches", v);
}

static void chk_tee(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "", "output-error", "writes", v);
}

static void chk_truncate(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "sr", "size reference", "truncates", v);
}

static void chk_shred(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "ns", "iterations size random-source", "shreds", v);
}

static void chk_setfacl(const struct cmd *c, struct policy_verdict *v)
{
  write_operands(c, "mMxX", "modify modify-file remove remove-file", "changes the ACL of", v);
}

/* chmod -x FILE: the mode looks like an option. */
static bool chmod_dash_mode(const struct cmd *c)
{
  for (int i = 1; i < c->argc && !streq(c->argv[i], "--"); i++) {
    const char *a = c->argv[i];
    if (a[0] == '-' && a[1] && a[1] != '-' && !a[strspn(a + 1, "rwxXstugoa,+-=01234567") + 1])
      return true;
  }
  return false;
}

/* chmod/chown/chgrp: -R on / or a top-level system directory is BLOCKED
 * (`chmod -R 777 /`); a home directory is the owner's business. */
static void chk_perm(const struct cmd *c, struct policy_verdict *v)
{
  const char *who = base_name(c->argv[0]);
  bool rec = has_opt(c, "", "reference", "R", "recursive");
  bool skip = !has_opt(c, "", "reference", NULL, "reference") &&
              !(streq(who, "chmod") && chmod_dash_mode(c));
  char label[48];
  struct opts o;
  struct opt a;

  snprintf(label, sizeof label, "%s%s", who, rec ? " -R" : "");
  opts_init(&o, c, 1, "", "reference");
  while (opts_next(&o, &a)) {
    if (!a.operand)
      continue;
    if (skip) {
      skip = false;   /* the mode or owner */
      continue;
    }
    judge_destroy(label, "changes", a.operand, rec, false, v);
  }
}

static void dd_output(const char *of, struct policy_verdict *v)
{
  char p[POLICY_PATH];
  bool dyn;

  if (path_norm(of, p, &dyn) == P_ABS && starts(p, "/dev/") && !path_sink(p))
    v_raise(v, RISK_BLOCKED, "dd of='%.80s' overwrites a device", of);
  else
    judge_write("dd", "writes", of, v);
}

static void chk_dd(const struct cmd *c, struct policy_verdict *v)
{
  char p[POLICY_PATH];
  bool dyn;

  for (int i = 1; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (starts(a, "of="))
      dd_output(a + 3, v);
    else if (starts(a, "if=") && path_norm(a + 3, p, &dyn) == P_ABS && starts_any(p, DISK_DEVS))
      v_raise(v, RISK_ADMIN, "dd reads the raw device '%.80s'", p);
  }
}

static void chk_sed(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "efl", LT[] = "expression file line-length";
  bool script_given = has_opt(c, T, LT, "ef", "expression file");
  struct opts o;
  struct opt a;

  if (!has_opt(c, T, LT, "i", "in-place"))
    return;
  v_raise(v, RISK_WRITE, "sed -i edits files in place");
  opts_init(&o, c, 1, T, LT);
  while (opts_next(&o, &a)) {
    if (!a.operand)
      continue;
    if (!script_given) {
      script_given = true;   /* the first operand is the script */
      continue;
    }
    judge_write("sed -i", "edits", a.operand, v);
  }
}

/* An awk program that prints into a file (print > "f") or runs commands. */
static bool awk_writes(const char *prog)
{
  const char *p = prog;

  if (strstr(prog, "system") || strchr(prog, '|'))
    return true;
  while ((p = strstr(p, "print"))) {
    p += strcspn(p, ";}\n>");
    if (*p == '>')
      return true;
  }
  return false;
}

static void chk_awk(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "fvF", LT[] = "file assign field-separator";
  const char *who = base_name(c->argv[0]);
  int k;

  if (has_opt(c, T, LT, "f", "file")) {
    v_raise(v, RISK_WRITE, "%s runs a program file that cannot be checked", who);
    return;
  }
  k = first_operand(c, 1, T, LT);
  if (k > 0 && awk_writes(c->argv[k]))
    v_raise(v, RISK_WRITE, "%s program may run commands or write files", who);
}

static void chk_sort(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "kotST",
            "key output field-separator buffer-size temporary-directory files0-from");
  while (opts_next(&o, &a))
    if (a.s == 'o' || streq(a.l, "output"))
      judge_write("sort -o", "writes", a.val, v);
}

/* uniq IN OUT and xxd IN OUT write their second operand. */
static void second_operand_written(const struct cmd *c, const char *takes,
                                   struct policy_verdict *v)
{
  struct opts o;
  struct opt a;
  int n = 0;

  opts_init(&o, c, 1, takes, NULL);
  while (opts_next(&o, &a))
    if (a.operand && ++n == 2)
      judge_write(base_name(c->argv[0]), "writes", a.operand, v);
}

static void chk_uniq(const struct cmd *c, struct policy_verdict *v)
{
  second_operand_written(c, "fsw", v);
}

static void chk_xxd(const struct cmd *c, struct policy_verdict *v)
{
  second_operand_written(c, "cglosn", v);
}

/* ---- find ---------------------------------------------------------------- */

static bool find_expr_word(const char *w)
{
  return (w[0] == '-' && w[1]) || in_words("( ) ! ,", w);
}

/* -exec CMD … ; — judged as a command of its own. */
static int find_exec(const struct cmd *c, int i, const char **deletes,
                     struct policy_verdict *v)
{
  int j = i;
  struct cmd inner;

  while (j < c->argc && !streq(c->argv[j], ";") && !streq(c->argv[j], "+"))
    j++;
  inner = cmd_shift(c, i);
  inner.argc = j - i;
  inner.depth = c->depth + 1;
  if (inner.argc > 0) {
    judge_cmd(&inner, v);
    if (in_words("rm shred unlink rmdir", base_name(inner.argv[0])))
      *deletes = "find -exec rm";
  }
  return j;
}

static void chk_find(const struct cmd *c, struct policy_verdict *v)
{
  const char *deletes = NULL;
  int i = 1, start;

  while (i < c->argc && in_words("-H -L -P -O0 -O1 -O2 -O3", c->argv[i]))
    i++;
  for (start = i; i < c->argc && !find_expr_word(c->argv[i]); i++)
    ;
  int end = i;
  for (; i < c->argc; i++) {
    const char *w = c->argv[i];
    if (streq(w, "-delete"))
      deletes = "find -delete";
    else if (in_words("-fprint -fprint0 -fprintf -fls", w) && i + 1 < c->argc)
      judge_write("find", "writes", c->argv[++i], v);
    else if (in_words("-exec -execdir -ok -okdir", w))
      i = find_exec(c, i + 1, &deletes, v);
  }
  if (!deletes)
    return;
  v_raise(v, RISK_WRITE, "%s deletes files", deletes);
  for (int k = start; k < end; k++)
    judge_destroy(deletes, "deletes in", c->argv[k], true, true, v);
}

/* ---- archives ------------------------------------------------------------ */

struct tar_mode {
  bool write, create, list, helper;
  const char *dir, *file;
};

static void tar_letter(char ch, struct tar_mode *m)
{
  if (strchr("xcruA", ch))
    m->write = true;
  if (ch == 'c')
    m->create = true;
  if (strchr("td", ch))
    m->list = true;
  if (strchr("IF", ch))
    m->helper = true;
}

static void tar_long(const struct opt *a, struct tar_mode *m)
{
  if (in_words("extract get create append update catenate concatenate", a->l))
    m->write = true;
  if (streq(a->l, "create"))
    m->create = true;
  if (in_words("list diff compare", a->l))
    m->list = true;
  if (in_words("to-command use-compress-program checkpoint-action info-script "
               "new-volume-script rsh-command", a->l))
    m->helper = true;
  if (streq(a->l, "directory"))
    m->dir = a->val;
  if (streq(a->l, "file"))
    m->file = a->val;
}

static void tar_scan(const struct cmd *c, struct tar_mode *m)
{
  struct opts o;
  struct opt a;
  int from = 1;

  if (c->argc > 1 && c->argv[1][0] != '-') {   /* old style: tar xzf FILE */
    for (const char *p = c->argv[1]; *p; p++)
      tar_letter(*p, m);
    from = 2;
    if (strchr(c->argv[1], 'f') && c->argc > 2)
      m->file = c->argv[from++];
  }
  opts_init(&o, c, from, "CfbFgHIKLNTVX",
            "directory file to-command use-compress-program checkpoint-action info-script "
            "new-volume-script rsh-command exclude label");
  while (opts_next(&o, &a)) {
    if (a.s)
      tar_letter(a.s, m);
    if (a.s == 'C')
      m->dir = a.val;
    if (a.s == 'f')
      m->file = a.val;
    if (a.l[0])
      tar_long(&a, m);
  }
}

static void chk_tar(const struct cmd *c, struct policy_verdict *v)
{
  struct tar_mode m = {0};

  tar_scan(c, &m);
  if (m.helper)
    v_raise(v, RISK_WRITE, "tar runs a helper command");
  if (!m.write)
    return;
  if (m.dir)
    judge_write("tar -C", "extracts into", m.dir, v);
  if (m.create && m.file && !streq(m.file, "-"))
    judge_write("tar", "writes", m.file, v);
  v_raise(v, RISK_WRITE, "tar extracts or creates files");
}

static void chk_unzip(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  if (has_opt(c, "dP", NULL, "lvtZpz", NULL))
    return;
  opts_init(&o, c, 1, "dP", NULL);
  while (opts_next(&o, &a))
    if (a.s == 'd')
      judge_write("unzip -d", "extracts into", a.val, v);
  v_raise(v, RISK_WRITE, "unzip extracts files");
}

static void chk_zip(const struct cmd *c, struct policy_verdict *v)
{
  if (!has_opt(c, "", NULL, "clt", "stdout to-stdout list test"))
    v_raise(v, RISK_WRITE, "%s replaces files with (de)compressed ones",
            base_name(c->argv[0]));
}

/* ---- processes and power ------------------------------------------------- */

static void chk_kill(const struct cmd *c, struct policy_verdict *v)
{
  int i = 1;

  if (c->argc > 1 && in_words("-l -L --list --table", c->argv[1]))
    return;
  v_raise(v, RISK_WRITE, "kill signals processes");
  if (i < c->argc && (streq(c->argv[i], "-s") || streq(c->argv[i], "-n")))
    i += 2;
  else if (i < c->argc && c->argv[i][0] == '-' && !streq(c->argv[i], "--"))
    i++;   /* the signal: -9, -KILL */
  for (; i < c->argc; i++) {
    if (streq(c->argv[i], "-1"))
      v_raise(v, RISK_BLOCKED, "kill -1 signals every process on the host");
    else if (streq(c->argv[i], "1"))
      v_raise(v, RISK_ADMIN, "kill of pid 1 takes down init");
  }
}

static void chk_pkill(const struct cmd *c, struct policy_verdict *v)
{
  const char *who = base_name(c->argv[0]);
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "uUgGPstFoy", "euid uid pgroup group parent session terminal pidfile "
            "user signal older-than younger-than");
  while (opts_next(&o, &a)) {
    if (a.operand && in_words("init systemd sshd dbus-daemon systemd-journald", a.operand))
      v_raise(v, RISK_ADMIN, "%s %s stops a core system process", who, a.operand);
    if ((a.s == 'u' || a.s == 'U' || streq(a.l, "user")) && a.val &&
        (streq(a.val, "root") || streq(a.val, "0")))
      v_raise(v, RISK_ADMIN, "%s -u root signals root's processes", who);
  }
}

static void chk_shutdown(const struct cmd *c, struct policy_verdict *v)
{
  if (!has_opt(c, "", NULL, "c", NULL))
    v_raise(v, RISK_BLOCKED, "shutdown takes the host offline; a person must do it");
}

static void chk_init(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (in_words("0 1 6 s S single halt reboot poweroff emergency rescue", c->argv[i]))
      v_raise(v, RISK_BLOCKED, "%s %s takes the host offline; a person must do it",
              base_name(c->argv[0]), c->argv[i]);
}

static void chk_fdisk(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (in_words("-l --list -d --dump -V --version -h --help print", c->argv[i]))
      return;
  v_raise(v, RISK_BLOCKED, "%s rewrites partition tables", base_name(c->argv[0]));
}

static void chk_crontab(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "u", NULL);
  while (opts_next(&o, &a)) {
    if (a.s == 'l' || a.s == 'u')
      continue;
    if (a.operand)
      v_raise(v, RISK_ADMIN, "crontab %.60s replaces scheduled jobs", a.operand);
    else
      v_raise(v, RISK_ADMIN, "crontab -%c changes scheduled jobs", a.s ? a.s : '-');
  }
}

/* ---- system settings ----------------------------------------------------- */

static void chk_hostname(const struct cmd *c, struct policy_verdict *v)
{
  if (first_operand(c, 1, "F", "file") > 0 || has_opt(c, "F", "file", "Fb", "file boot"))
    v_raise(v, RISK_ADMIN, "hostname with a name renames the host");
}

static void chk_date(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "dfrs", "date file reference set");
  while (opts_next(&o, &a))
    if (a.s == 's' || streq(a.l, "set") || (a.operand && a.operand[0] != '+'))
      v_raise(v, RISK_ADMIN, "date with a time sets the system clock");
}

static void chk_dmesg(const struct cmd *c, struct policy_verdict *v)
{
  if (has_opt(c, "flnsF", NULL, "cCDEn", "clear read-clear console-off console-on "
              "console-level"))
    v_raise(v, RISK_ADMIN, "dmesg with these options changes the kernel log");
}

static void chk_ip(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (in_words("add del delete change replace set flush exec append prepend restore "
                 "attach detach up down", c->argv[i])) {
      v_raise(v, RISK_ADMIN, "ip %s changes the network configuration", c->argv[i]);
      return;
    }
}

static void chk_ifconfig(const struct cmd *c, struct policy_verdict *v)
{
  if (count_operands(c, "", NULL) > 1)
    v_raise(v, RISK_ADMIN, "ifconfig with settings changes an interface");
}

static void chk_route(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (in_words("add del delete flush", c->argv[i]))
      v_raise(v, RISK_ADMIN, "route %s changes the routing table", c->argv[i]);
}

static void chk_mount(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (!streq(c->argv[i], "-l")) {
      v_raise(v, RISK_ADMIN, "mount with arguments changes mounted file systems");
      return;
    }
}

static void chk_swapon(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (!in_words("--show -s --summary --help -h -V --version", c->argv[i])) {
      v_raise(v, RISK_ADMIN, "swapon with a device changes swap");
      return;
    }
}

static void chk_sysctl(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "", NULL);
  while (opts_next(&o, &a))
    if (a.s == 'w' || a.s == 'p' || in_words("write load system", a.l) ||
        (a.operand && strchr(a.operand, '=')))
      v_raise(v, RISK_ADMIN, "sysctl with a value changes kernel settings");
}

static void chk_journalctl(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "unopSUtDMgF", "unit lines output priority since until identifier "
            "directory machine grep field");
  while (opts_next(&o, &a))
    if (starts(a.l, "vacuum") || in_words("rotate flush sync relinquish-var "
                                          "smart-relinquish-var setup-keys update-catalog", a.l))
      v_raise(v, RISK_ADMIN, "journalctl --%s changes the journal", a.l);
}

static const struct sub_rule systemctl_subs[] = {
  {"status show cat is-active is-enabled is-failed is-system-running list-units "
   "list-unit-files list-timers list-sockets list-jobs list-dependencies list-machines "
   "list-automounts list-paths get-default show-environment help", RISK_READ_ONLY, "only reads"},
  /* The bot runs on the host it would take down: the job could not report
   * back, and a host that does not come up again cannot be fixed from chat. */
  {"reboot poweroff halt kexec soft-reboot emergency rescue suspend hibernate hybrid-sleep "
   "suspend-then-hibernate", RISK_BLOCKED, "takes the host offline; a person must do it"},
  {NULL, RISK_ADMIN, "controls system services"},
};

static void chk_systemctl(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "tpPsHMno", LT[] = "type property signal host machine lines "
                                             "output state kill-whom root";
  int k = first_operand(c, 1, T, LT);
  const struct sub_rule *r = systemctl_subs;

  if (k <= 0)
    return;
  while (r->subs && !in_words(r->subs, c->argv[k]))
    r++;
  if (r->risk == RISK_ADMIN && has_opt(c, T, LT, NULL, "user"))
    v_raise(v, RISK_WRITE, "systemctl --user %.40s controls the user's own services",
            c->argv[k]);
  else
    judge_sub("systemctl", c->argv[k], systemctl_subs, v);
}

static void chk_service(const struct cmd *c, struct policy_verdict *v)
{
  if (c->argc > 1 && streq(c->argv[1], "--status-all"))
    return;
  if (c->argc > 2 && streq(c->argv[2], "status"))
    return;
  v_raise(v, RISK_ADMIN, "service %.40s%s%.20s controls system services",
          c->argc > 1 ? c->argv[1] : "", c->argc > 2 ? " " : "", c->argc > 2 ? c->argv[2] : "");
}

static const struct sub_rule ctl_subs[] = {
  {"status show list-timezones list-locales list-keymaps list-x11-keymap-layouts "
   "timesync-status show-timesync", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "changes system settings"},
};

static void chk_ctl(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "HM", "host machine", ctl_subs, v);
}

/* ---- firewalls ------------------------------------------------------------ */

static void chk_iptables(const struct cmd *c, struct policy_verdict *v)
{
  bool list = false;

  for (int i = 1; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (a[0] != '-')
      continue;
    if (in_words("--append --delete --insert --replace --new-chain --delete-chain --policy "
                 "--rename-chain --flush --zero", a) ||
        (a[1] != '-' && strpbrk(a + 1, "ADIRNXPEFZ"))) {
      v_raise(v, RISK_ADMIN, "%s %s changes firewall rules", base_name(c->argv[0]), a);
      return;
    }
    list |= in_words("--list --list-rules", a) || (a[1] != '-' && strpbrk(a + 1, "LS"));
  }
  if (!list)
    v_raise(v, RISK_ADMIN, "%s changes firewall rules", base_name(c->argv[0]));
}

static const struct sub_rule nft_subs[] = {
  {"list --version -v", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "changes the firewall"},
};

static void chk_nft(const struct cmd *c, struct policy_verdict *v)
{
  if (has_opt(c, "fI", "file includepath", "f", "file"))
    v_raise(v, RISK_ADMIN, "nft -f loads firewall rules");
  judge_first_sub(c, "fI", "file includepath", nft_subs, v);
}

static const struct sub_rule ufw_subs[] = {
  {"status version show app", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "changes the firewall"},
};

static void chk_ufw(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "", NULL, ufw_subs, v);
}

static void chk_firewalld(const struct cmd *c, struct policy_verdict *v)
{
  static const char *const change[] = {
    "--add", "--remove", "--set", "--reload", "--complete-reload", "--runtime-to-permanent",
    "--new", "--delete", "--panic", "--change", "--load", "--reset", NULL,
  };

  for (int i = 1; i < c->argc; i++)
    if (starts_any(c->argv[i], change))
      v_raise(v, RISK_ADMIN, "firewall-cmd %.40s changes the firewall", c->argv[i]);
}

/* ---- packages ------------------------------------------------------------- */

static const struct sub_rule apt_subs[] = {
  {"list search show showsrc policy depends rdepends showpkg changelog madison pkgnames "
   "stats dump dumpavail unmet help moo version", RISK_READ_ONLY, "only reads"},
  {"download source", RISK_WRITE, "downloads into the current directory"},
  {NULL, RISK_ADMIN, "changes system packages"},
};

static void chk_apt(const struct cmd *c, struct policy_verdict *v)
{
  static const char T[] = "octa", LT[] = "option config-file target-release host-architecture";

  if (has_opt(c, T, LT, "s", "simulate dry-run just-print no-act recon")) {
    v_raise(v, RISK_READ_ONLY, "%s -s only simulates", base_name(c->argv[0]));
    return;
  }
  judge_first_sub(c, T, LT, apt_subs, v);
}

/* dpkg: the first option is the action. */
static void chk_dpkg(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "", NULL);
  while (opts_next(&o, &a)) {
    if (a.operand)
      continue;
    if ((a.s && strchr("lLsSpcIfC", a.s)) ||
        in_words("list listfiles status search print-avail contents info field "
                 "get-selections print-architecture print-foreign-architectures "
                 "compare-versions version help audit verify", a.l))
      return;
    if (a.s == 'x' || a.s == 'X' || in_words("extract vextract", a.l))
      v_raise(v, RISK_WRITE, "dpkg -x unpacks a package into a directory");
    else
      v_raise(v, RISK_ADMIN, "dpkg %s%c%s changes system packages", a.s ? "-" : "--",
              a.s ? a.s : ' ', a.l);
    return;
  }
}

static void chk_rpm(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (a[0] != '-')
      continue;
    if (starts(a, "-q") || in_words("--query --verify -V --version --eval -E --querytags "
                                    "--showrc", a))
      return;
    v_raise(v, RISK_ADMIN, "rpm %.40s changes system packages", a);
    return;
  }
}

static void chk_pacman(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (a[0] != '-' || a[1] == '-')
      continue;
    if (a[1] == 'Q' || a[1] == 'V' || (a[1] == 'F' && !strchr(a, 'y')) ||
        (a[1] == 'S' && a[2] && !a[2 + strspn(a + 2, "silgq")]))
      return;
    v_raise(v, RISK_ADMIN, "pacman %.40s changes system packages", a);
    return;
  }
}

static const struct sub_rule yum_subs[] = {
  {"list info search provides whatprovides repolist repoinfo check-update history deplist "
   "help version repoquery", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "changes system packages"},
};

static void chk_yum(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "cdeRx", NULL, yum_subs, v);
}

static const struct sub_rule apk_subs[] = {
  {"info search list policy dot stats version audit verify", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "changes system packages"},
};

static void chk_apk(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "X", "repository", apk_subs, v);
}

static const struct sub_rule snap_subs[] = {
  {"list info find version services changes change connections interfaces logs warnings "
   "help", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_ADMIN, "installs or changes snaps"},
};

static void chk_snap(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "", NULL, snap_subs, v);
}

static const struct sub_rule pip_subs[] = {
  {"list show freeze check help search index debug inspect hash", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "installs or removes python packages"},
};

static void chk_pip(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  judge_first_sub(c, "", NULL, pip_subs, v);
  opts_init(&o, c, 1, "t", "target prefix root");
  while (opts_next(&o, &a)) {
    if (a.s == 't' || in_words("target prefix root", a.l))
      judge_write("pip", "installs into", a.val, v);
    if (streq(a.l, "break-system-packages"))
      v_raise(v, RISK_ADMIN, "pip --break-system-packages changes the system python");
  }
}

static const struct sub_rule npm_subs[] = {
  {"ls list ll la view info show v outdated version help search root prefix bin why "
   "explain doctor audit whoami ping fund query find-dupes", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "installs packages or runs scripts"},
};

static void chk_npm(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "", NULL);

  if (k <= 0)
    return;
  judge_sub(base_name(c->argv[0]), c->argv[k], npm_subs, v);
  if (v->risk == RISK_WRITE &&
      (streq(c->argv[k], "global") || has_opt(c, "", NULL, "g", "global")))
    v_raise(v, RISK_ADMIN, "%s -g installs system-wide", base_name(c->argv[0]));
}

static const struct sub_rule gem_subs[] = {
  {"list search info query environment which contents specification help dependency "
   "outdated", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "installs or removes ruby gems"},
};

static void chk_gem(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "", NULL, gem_subs, v);
}

static const struct sub_rule cargo_subs[] = {
  {"version tree metadata search help locate-project pkgid verify-project read-manifest",
   RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "builds, runs or installs code"},
};

static void chk_cargo(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "Z", "config", cargo_subs, v);
}

static const struct sub_rule go_subs[] = {
  {"version env list doc help vet", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "builds or runs code"},
};

static void chk_go(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "C", NULL);

  judge_first_sub(c, "C", NULL, go_subs, v);
  if (k > 0 && streq(c->argv[k], "env") && has_opt(c, "C", NULL, "wu", NULL))
    v_raise(v, RISK_WRITE, "go env -w changes go settings");
}

/* ---- build tools ----------------------------------------------------------- */

static void chk_make(const struct cmd *c, struct policy_verdict *v)
{
  /* -n still runs $(shell …) and recursive $(MAKE) lines of a makefile; the
   * makefile belongs to the operator's project, so -n counts as reading. */
  if (!has_opt(c, "CfIoW", "directory file include-dir old-file what-if", "nq",
               "dry-run just-print recon question"))
    v_raise(v, RISK_WRITE, "make runs build recipes");
}

static void chk_ninja(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "Cfjkldtw", NULL);
  while (opts_next(&o, &a))
    if (a.s == 'n' || (a.s == 't' && in_words("targets query graph commands deps inputs list "
                                               "compdb rules", a.val)))
      return;
  v_raise(v, RISK_WRITE, "ninja runs build steps");
}

/* ---- git --------------------------------------------------------------------- */

static const struct sub_rule git_subs[] = {
  {"status log diff show blame annotate shortlog describe rev-parse rev-list ls-files "
   "ls-tree ls-remote cat-file grep whatchanged version help count-objects for-each-ref "
   "name-rev show-ref show-branch var diff-tree diff-files diff-index merge-base "
   "check-ignore check-attr check-ref-format cherry fsck verify-commit verify-tag "
   "verify-pack range-diff", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "changes the repository or working tree"},
};

/* Subcommands that list with some arguments and change with others. */
static const struct git_list {
  const char *sub;
  bool bare_reads;      /* without arguments it only lists */
  const char *reads;    /* a first argument that keeps it listing */
  const char *writes;   /* arguments that make it change things */
} git_lists[] = {
  {"branch", true, "-a -r -v -vv --all --remotes --list -l --show-current --merged "
   "--no-merged --contains --no-contains --sort --format --color --no-color --column",
   "-d -D -m -M -c -C --delete --move --copy -f --force -u --set-upstream-to "
   "--unset-upstream --edit-description --track --no-track"},
  {"tag", true, "-l --list -n --contains --no-contains --points-at --merged --no-merged "
   "--sort --format -v --verify --column", "-d --delete -f --force -a --annotate -s "
   "--sign -m -F -u"},
  {"remote", true, "-v --verbose show get-url", "add remove rm rename set-url set-head "
   "set-branches prune update"},
  {"stash", false, "list show", ""},
  {"reflog", true, "show exists", "expire delete"},
  {"worktree", false, "list", ""},
  {"submodule", true, "status summary", ""},
  {"notes", true, "list show", ""},
  {"config", true, "", "--unset --unset-all --add --replace-all --rename-section "
   "--remove-section -e --edit set unset rename-section remove-section edit"},
  {NULL, false, NULL, NULL},
};

/* git config reads with at most one operand (the key) and writes with two. */
static bool git_reads(const struct git_list *g, const struct cmd *c, int i)
{
  int operands = 0;

  for (int j = i + 1; j < c->argc; j++) {
    const char *a = c->argv[j];
    if (in_wordsn(g->writes, a, strcspn(a, "=")))
      return false;
    operands += a[0] != '-' && !in_words("get list", a);
  }
  if (streq(g->sub, "config"))
    return operands <= 1;
  if (i + 1 >= c->argc)
    return g->bare_reads;
  return in_words(g->reads, c->argv[i + 1]);
}

static bool git_listish(const struct cmd *c, int i, struct policy_verdict *v)
{
  const struct git_list *g = git_lists;

  while (g->sub && !streq(g->sub, c->argv[i]))
    g++;
  if (!g->sub)
    return false;
  if (git_reads(g, c, i))
    v_raise(v, RISK_READ_ONLY, "git %s only reads", g->sub);
  else
    v_raise(v, RISK_WRITE, "git %s changes the repository", g->sub);
  return true;
}

static void git_outputs(const struct cmd *c, int from, struct policy_verdict *v)
{
  for (int j = from; j < c->argc; j++) {
    const char *a = c->argv[j];
    if (starts(a, "--output="))
      judge_write("git --output", "writes", a + 9, v);
    else if (streq(a, "--output") && j + 1 < c->argc)
      judge_write("git --output", "writes", c->argv[++j], v);
    else if (streq(a, "--open-files-in-pager") || starts(a, "-O"))
      v_raise(v, RISK_WRITE, "git %s runs a pager program", a);
  }
}

static void chk_git(const struct cmd *c, struct policy_verdict *v)
{
  int i = 1;

  for (; i < c->argc && c->argv[i][0] == '-'; i++) {
    const char *a = c->argv[i];
    if (streq(a, "-c") || starts(a, "--exec-path") || starts(a, "--config-env"))
      v_raise(v, RISK_WRITE, "git %s can make git run other programs", a);
    if (in_words("-C -c --git-dir --work-tree --namespace --config-env", a) && i + 1 < c->argc)
      i++;
  }
  if (i >= c->argc)
    return;
  git_outputs(c, i + 1, v);
  if (!git_listish(c, i, v))
    judge_sub("git", c->argv[i], git_subs, v);
}

/* ---- containers --------------------------------------------------------------- */

static const struct sub_rule docker_subs[] = {
  {"ps images logs inspect version info stats top history port diff events search ls list "
   "df config", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "changes containers or images"},
};

static void docker_mount(const char *label, const char *src, struct policy_verdict *v)
{
  char p[POLICY_PATH];
  bool dyn;
  size_t n = strcspn(src, ":,");
  char buf[POLICY_PATH];

  if (n >= sizeof buf)
    return;
  memcpy(buf, src, n);
  buf[n] = '\0';
  if (path_norm(buf, p, &dyn) != P_ABS)
    return;
  if (streq(p, "/") || path_under_any(p, SYS_DIRS) || ends(p, "/docker.sock"))
    v_raise(v, RISK_ADMIN, "%s mounts host path '%.80s'", label, p);
}

/* docker run: options that hand the container the host. */
static void docker_host_access(const struct cmd *c, int from, const char *label,
                               struct policy_verdict *v)
{
  for (int j = from; j < c->argc; j++) {
    const char *a = c->argv[j], *next = j + 1 < c->argc ? c->argv[j + 1] : "";
    if (streq(a, "--privileged") || in_words("--pid=host --ipc=host --userns=host "
                                             "--cap-add=ALL --cap-add=SYS_ADMIN", a) ||
        (in_words("--pid --cap-add", a) && in_words("host ALL SYS_ADMIN", next)))
      v_raise(v, RISK_ADMIN, "%s %s gives the container root on the host", label, a);
    else if (streq(a, "-v") || streq(a, "--volume"))
      docker_mount(label, next, v);
    else if (starts(a, "--volume=") || (starts(a, "-v") && a[2]))
      docker_mount(label, a + (a[1] == 'v' ? 2 : 9), v);
    else if (streq(a, "--mount") && (strstr(next, "source=") || strstr(next, "src=")))
      docker_mount(label, strchr(strstr(next, "src=") ? strstr(next, "src=") :
                                 strstr(next, "source="), '=') + 1, v);
  }
}

static void chk_docker(const struct cmd *c, struct policy_verdict *v)
{
  char label[64];
  int k = first_operand(c, 1, "Hcl", "host context log-level config tlscacert tlscert tlskey");

  if (k <= 0)
    return;
  snprintf(label, sizeof label, "%s", base_name(c->argv[0]));
  if (in_words("container image volume network system compose buildx context plugin node "
               "service stack secret builder manifest trust", c->argv[k])) {
    int k2 = first_operand(c, k + 1, "fp", "file project-name profile env-file "
                           "project-directory");
    if (k2 <= 0)
      return;
    snprintf(label, sizeof label, "%s %.20s", base_name(c->argv[0]), c->argv[k]);
    k = k2;
  }
  judge_sub(label, c->argv[k], docker_subs, v);
  if (in_words("run create exec", c->argv[k]))
    docker_host_access(c, k + 1, label, v);
}

static const struct sub_rule compose_subs[] = {
  {"ps logs config top images version ls port events", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "changes containers"},
};

static void chk_compose(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "fp", "file project-name profile env-file project-directory",
                  compose_subs, v);
}

static const struct sub_rule kubectl_subs[] = {
  {"get describe logs top version explain api-resources api-versions cluster-info events "
   "wait auth", RISK_READ_ONLY, "only reads"},
  {NULL, RISK_WRITE, "changes the cluster"},
};

static void chk_kubectl(const struct cmd *c, struct policy_verdict *v)
{
  judge_first_sub(c, "nlof", "namespace context kubeconfig cluster user selector output "
                  "filename server token", kubectl_subs, v);
}

/* ---- network ---------------------------------------------------------------- */

static const char CURL_TAKES[] = "AbcCdDeEFHKmoPQrtTuUwxXyYz";
static const char CURL_LTAKES[] =
    "output output-dir data data-raw data-binary data-urlencode data-ascii json form "
    "form-string request upload-file config cookie-jar cookie dump-header header user-agent "
    "user proxy referer max-time connect-timeout trace trace-ascii stderr libcurl write-out "
    "range retry cacert cert key etag-save hsts alt-svc url";

static void curl_file(const char *who, const char *val, struct policy_verdict *v)
{
  if (val && !streq(val, "-"))
    judge_write(who, "writes", val, v);
}

static void curl_opt(const struct opt *a, struct policy_verdict *v)
{
  if (a->s == 'o' || streq(a->l, "output"))
    curl_file("curl -o", a->val, v);
  else if (a->s == 'O' || starts(a->l, "remote-name"))
    v_raise(v, RISK_WRITE, "curl -O saves files");
  else if (a->s == 'T' || streq(a->l, "upload-file"))
    v_raise(v, RISK_WRITE, "curl -T uploads a file");
  else if (a->s == 'd' || a->s == 'F' || starts(a->l, "data") || starts(a->l, "form") ||
           streq(a->l, "json"))
    v_raise(v, RISK_WRITE, "curl with data sends it to a server");
  else if (a->s == 'X' || streq(a->l, "request")) {
    if (!in_words("GET HEAD get head", a->val))
      v_raise(v, RISK_WRITE, "curl -X %.20s can change remote state", a->val);
  } else if (a->s == 'K' || streq(a->l, "config"))
    v_raise(v, RISK_WRITE, "curl -K reads options that cannot be checked");
  else if (a->s == 'c' || a->s == 'D' ||
           in_words("cookie-jar dump-header trace trace-ascii stderr libcurl etag-save hsts "
                    "alt-svc", a->l))
    curl_file("curl", a->val, v);
}

static void chk_curl(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, CURL_TAKES, CURL_LTAKES);
  while (opts_next(&o, &a))
    curl_opt(&a, v);
}

static const char WGET_TAKES[] = "OoaPiBeTtwUlQDARIX";
static const char WGET_LTAKES[] =
    "output-document output-file append-output directory-prefix input-file base execute "
    "timeout tries wait user-agent level quota domains accept reject include-directories "
    "exclude-directories post-data post-file body-data body-file method header user password";

/* Returns whether the option sends the download to stdout (or nowhere). */
static bool wget_opt(const struct opt *a, struct policy_verdict *v)
{
  if (a->s == 'O' || streq(a->l, "output-document")) {
    curl_file("wget -O", a->val, v);
    return true;
  }
  if (streq(a->l, "spider"))
    return true;
  if (a->s == 'o' || a->s == 'a' || in_words("output-file append-output", a->l))
    curl_file("wget -o", a->val, v);
  else if (a->s == 'P' || streq(a->l, "directory-prefix"))
    curl_file("wget -P", a->val, v);
  else if (in_words("post-data post-file body-data body-file", a->l) ||
           (streq(a->l, "method") && !in_words("GET HEAD get head", a->val)))
    v_raise(v, RISK_WRITE, "wget sends data to a server");
  else if (a->s == 'e' || streq(a->l, "execute"))
    v_raise(v, RISK_WRITE, "wget -e runs settings that cannot be checked");
  return false;
}

static void chk_wget(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;
  bool to_stdout = false;

  opts_init(&o, c, 1, WGET_TAKES, WGET_LTAKES);
  while (opts_next(&o, &a))
    to_stdout |= wget_opt(&a, v);
  if (!to_stdout)
    v_raise(v, RISK_WRITE, "wget saves files");
}

/* Whether a downloader prints what it fetches (for `curl … | sh`). */
static bool dl_stdout(const struct cmd *e)
{
  const char *n = base_name(e->argv[0]);
  bool curl = streq(n, "curl"), out = false;
  struct opts o;
  struct opt a;

  if (!curl && !streq(n, "wget"))
    return false;
  opts_init(&o, e, 1, curl ? CURL_TAKES : WGET_TAKES, curl ? CURL_LTAKES : WGET_LTAKES);
  while (opts_next(&o, &a)) {
    if (curl && (a.s == 'O' || starts(a.l, "remote-name")))
      return false;
    if (curl && (a.s == 'o' || streq(a.l, "output")) && !streq(a.val, "-"))
      return false;
    if (!curl && (a.s == 'O' || streq(a.l, "output-document")))
      out = streq(a.val, "-");
  }
  return curl || out;
}

static void chk_ssh(const struct cmd *c, struct policy_verdict *v)
{
  int host = first_operand(c, 1, "bcDEeFIiJLlmOopQRSwWB", NULL);

  if (host > 0 && host + 1 < c->argc)
    judge_joined(c, host + 1, v);
}

/* ---- shells, interpreters and builtins ------------------------------------- */

static const char SHELLS[] = "sh bash dash zsh ksh mksh ash rbash fish csh tcsh yash posh";
static const char INTERPS[] = "python python2 python3 perl ruby node nodejs php lua tclsh";

struct sh_args {
  bool dash_c, stdin_flag, version;
};

/* Parses a shell's options; returns the index of its first operand, or 0. */
static int sh_args(const struct cmd *c, struct sh_args *a)
{
  int i = 1;

  memset(a, 0, sizeof *a);
  for (; i < c->argc; i++) {
    const char *w = c->argv[i];
    if (streq(w, "--"))
      return i + 1 < c->argc ? i + 1 : 0;
    if (in_words("--version --help", w))
      a->version = true;
    else if (in_words("--rcfile --init-file", w))
      i++;
    else if ((w[0] != '-' && w[0] != '+') || w[1] == '\0')
      return i;
    else if (w[1] != '-') {
      a->dash_c |= strchr(w + 1, 'c') != NULL;
      a->stdin_flag |= strchr(w + 1, 's') != NULL;
      for (const char *p = w + 1; *p; p++)
        i += *p == 'o' || *p == 'O';   /* -o pipefail */
    }
  }
  return 0;
}

static void chk_shell(const struct cmd *c, struct policy_verdict *v)
{
  const char *sh = base_name(c->argv[0]);
  struct sh_args a;
  int k = sh_args(c, &a);

  if (a.dash_c && k > 0)
    script_judge(c->argv[k], strlen(c->argv[k]), c->depth + 1, v, NULL);
  else if (a.dash_c)
    v_raise(v, RISK_WRITE, "%s -c without a script", sh);
  else if (k > 0 && !a.stdin_flag && !streq(c->argv[k], "-"))
    v_raise(v, RISK_WRITE, "%s runs script file '%.80s' that cannot be checked", sh, c->argv[k]);
  else if (!a.version || k > 0 || a.stdin_flag)
    v_raise(v, RISK_WRITE, "%s reads commands from stdin", sh);
}

static void chk_interp(const struct cmd *c, struct policy_verdict *v)
{
  const char *who = base_name(c->argv[0]);

  if (c->argc == 1) {
    v_raise(v, RISK_WRITE, "%s reads code from stdin", who);
    return;
  }
  for (int i = 1; i < c->argc; i++)
    if (!in_words("--version -V --help -h", c->argv[i])) {
      v_raise(v, RISK_WRITE, "%s runs code that cannot be checked", who);
      return;
    }
}

/* Whether a command runs code it reads from stdin (the end of `curl | sh`). */
static bool runs_stdin(const struct cmd *e)
{
  const char *n = base_name(e->argv[0]);
  struct sh_args a;
  int k;

  if (in_words(SHELLS, n)) {
    k = sh_args(e, &a);
    return !a.dash_c && (k == 0 || a.stdin_flag || streq(e->argv[k], "-"));
  }
  if (!in_words(INTERPS, n))
    return false;
  for (int i = 1; i < e->argc; i++) {
    const char *w = e->argv[i];
    if (streq(w, "-"))
      return true;
    if (w[0] != '-')
      return false;   /* a script file */
    if (w[1] != '-' && strpbrk(w + 1, "cemEr"))
      return false;   /* inline code or a module */
  }
  return true;
}

static void chk_eval(const struct cmd *c, struct policy_verdict *v)
{
  judge_joined(c, 1, v);
}

static void chk_watch(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "n", "interval");

  if (k > 0)
    judge_joined(c, k, v);
}

static void chk_su(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "cgGsw", "command session-command group supp-group shell "
            "whitelist-environment");
  while (opts_next(&o, &a))
    if (a.val && (a.s == 'c' || in_words("command session-command", a.l)))
      script_judge(a.val, strlen(a.val), c->depth + 1, v, NULL);
}

static void chk_assign(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++)
    if (is_assignment(c->argv[i]))
      judge_assign(c->argv[i], v);
}

/* alias ls='rm -rf /': the value is what will run. */
static void chk_alias(const struct cmd *c, struct policy_verdict *v)
{
  for (int i = 1; i < c->argc; i++) {
    const char *eq = strchr(c->argv[i], '=');
    if (eq)
      script_judge(eq + 1, strlen(eq + 1), c->depth + 1, v, NULL);
  }
}

static void chk_trap(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "", NULL);

  if (k > 0 && k + 1 < c->argc)
    script_judge(c->argv[k], strlen(c->argv[k]), c->depth + 1, v, NULL);
}

/* ---- wrappers ---------------------------------------------------------------- */

/* Skips VAR=value words before the command (sudo, env). */
static int skip_assignments(const struct cmd *c, int k, struct policy_verdict *v)
{
  while (k > 0 && k < c->argc && is_assignment(c->argv[k]))
    judge_assign(c->argv[k++], v);
  return k < c->argc ? k : 0;
}

static int wrap_root(const struct cmd *c, int k, struct policy_verdict *v)
{
  k = skip_assignments(c, k, v);
  if (k > 0)
    v_raise(v, RISK_ADMIN, "%s runs %.60s as root", base_name(c->argv[0]),
            base_name(c->argv[k]));
  return k;
}

static int wrap_sudo(const struct cmd *c, struct policy_verdict *v)
{
  return wrap_root(c, first_operand(c, 1, "ugCDprtTU", "user group close-from chdir host "
                                    "prompt role type command-timeout other-user"), v);
}

static int wrap_doas(const struct cmd *c, struct policy_verdict *v)
{
  return wrap_root(c, first_operand(c, 1, "uC", NULL), v);
}

static int wrap_pkexec(const struct cmd *c, struct policy_verdict *v)
{
  return wrap_root(c, first_operand(c, 1, "", "user"), v);
}

static int wrap_chroot(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "", "userspec groups");

  return k > 0 && k + 1 < c->argc ? wrap_root(c, k + 1, v) : 0;
}

static int wrap_env(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "uCS", "unset chdir split-string");
  while (opts_next(&o, &a)) {
    if (a.val && (a.s == 'S' || streq(a.l, "split-string")))
      script_judge(a.val, strlen(a.val), c->depth + 1, v, NULL);
    if (!a.operand)
      continue;
    if (!is_assignment(a.operand))
      return a.idx;
    judge_assign(a.operand, v);
  }
  return 0;
}

static int wrap_first(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  return first_operand(c, 1, "", NULL);
}

static int wrap_nice(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  return first_operand(c, 1, "n", "adjustment");
}

static int wrap_timeout(const struct cmd *c, struct policy_verdict *v)
{
  int k = first_operand(c, 1, "sk", "signal kill-after");

  (void)v;
  return k > 0 && k + 1 < c->argc ? k + 1 : 0;
}

static int wrap_ionice(const struct cmd *c, struct policy_verdict *v)
{
  if (has_opt(c, "cnpPu", "class classdata pid pgid uid", "pPu", "pid pgid uid"))
    v_raise(v, RISK_WRITE, "ionice changes another process's I/O priority");
  return first_operand(c, 1, "cnpPu", "class classdata pid pgid uid");
}

static int wrap_stdbuf(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  return first_operand(c, 1, "ioe", "input output error");
}

static int wrap_xargs(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  return first_operand(c, 1, "adEILnPs", "arg-file delimiter eof replace max-lines max-args "
                       "max-procs max-chars process-slot-var");
}

static int wrap_time(const struct cmd *c, struct policy_verdict *v)
{
  struct opts o;
  struct opt a;

  opts_init(&o, c, 1, "fo", "format output");
  while (opts_next(&o, &a)) {
    if (a.operand)
      return a.idx;
    if (a.s == 'o' || streq(a.l, "output"))
      judge_write("time -o", "writes", a.val, v);
  }
  return 0;
}

static int wrap_exec(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  return first_operand(c, 1, "a", NULL);
}

static int wrap_command(const struct cmd *c, struct policy_verdict *v)
{
  (void)v;
  if (has_opt(c, "", NULL, "vV", NULL))
    return 0;
  return first_operand(c, 1, "", NULL);
}

/* ---- the rule table ------------------------------------------------------------ */

/* Power-off and reboot are BLOCKED, not ADMIN: the bot runs on the host it
 * would take down, so the job could never report back, and a host that does
 * not come up again cannot be fixed from chat.  A person does it by hand. */
#define REBOOT_WHY "takes the host offline; a person must do it"

static const struct rule rules[] = {
  /* reading files and text */
  {"ls", RISK_READ_ONLY, "only lists files", NULL, NULL, 0},
  {"dir", RISK_READ_ONLY, "only lists files", NULL, NULL, 0},
  {"cat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"head", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"tail", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"less", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"more", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"wc", RISK_READ_ONLY, "only counts", NULL, NULL, 0},
  {"grep", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"egrep", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"fgrep", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"rg", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"zcat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"zgrep", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"zless", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"bzcat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"xzcat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"zstdcat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"stat", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"file", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"md5sum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"sha1sum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"sha256sum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"sha512sum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"b2sum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"cksum", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"strings", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"od", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"hexdump", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"xxd", RISK_READ_ONLY, "only reads", chk_xxd, NULL, 0},
  {"base64", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"base32", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"cut", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"tr", RISK_READ_ONLY, "only filters", NULL, NULL, 0},
  {"paste", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"join", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"comm", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"diff", RISK_READ_ONLY, "only compares", NULL, NULL, 0},
  {"cmp", RISK_READ_ONLY, "only compares", NULL, NULL, 0},
  {"column", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"fold", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"fmt", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"nl", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"rev", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"tac", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"expand", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"unexpand", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"jq", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"sort", RISK_READ_ONLY, "only reads", chk_sort, NULL, 0},
  {"uniq", RISK_READ_ONLY, "only reads", chk_uniq, NULL, 0},
  {"tree", RISK_READ_ONLY, "only lists files", NULL, NULL, 0},
  {"realpath", RISK_READ_ONLY, "only resolves names", NULL, NULL, 0},
  {"readlink", RISK_READ_ONLY, "only resolves names", NULL, NULL, 0},
  {"du", RISK_READ_ONLY, "only measures disk use", NULL, NULL, 0},
  {"df", RISK_READ_ONLY, "only reports free space", NULL, NULL, 0},
  {"find", RISK_READ_ONLY, "only searches", chk_find, NULL, 0},
  {"locate", RISK_READ_ONLY, "only searches", NULL, NULL, 0},
  {"sed", RISK_READ_ONLY, "only prints edited text", chk_sed, NULL, 0},
  {"awk", RISK_READ_ONLY, "only reads", chk_awk, NULL, 0},
  {"gawk", RISK_READ_ONLY, "only reads", chk_awk, NULL, 0},
  {"mawk", RISK_READ_ONLY, "only reads", chk_awk, NULL, 0},
  {"nawk", RISK_READ_ONLY, "only reads", chk_awk, NULL, 0},
  {"tee", RISK_READ_ONLY, "only copies its input to stdout", chk_tee, NULL, 0},
  {"dd", RISK_READ_ONLY, "only copies to stdout", chk_dd, NULL, 0},
  {"tar", RISK_READ_ONLY, "only lists an archive", chk_tar, NULL, 0},
  {"unzip", RISK_READ_ONLY, "only lists an archive", chk_unzip, NULL, 0},
  {"gzip", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"gunzip", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"bzip2", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"bunzip2", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"xz", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"unxz", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"zstd", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"unzstd", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  {"lz4", RISK_READ_ONLY, "only writes to stdout", chk_zip, NULL, 0},
  /* system information */
  {"free", RISK_READ_ONLY, "only reports memory", NULL, NULL, 0},
  {"uptime", RISK_READ_ONLY, "only reports load", NULL, NULL, 0},
  {"ps", RISK_READ_ONLY, "only lists processes", NULL, NULL, 0},
  {"top", RISK_READ_ONLY, "only lists processes", NULL, NULL, 0},
  {"htop", RISK_READ_ONLY, "only lists processes", NULL, NULL, 0},
  {"pgrep", RISK_READ_ONLY, "only lists processes", NULL, NULL, 0},
  {"pidof", RISK_READ_ONLY, "only lists processes", NULL, NULL, 0},
  {"uname", RISK_READ_ONLY, "only reports the system", NULL, NULL, 0},
  {"whoami", RISK_READ_ONLY, "only prints the user", NULL, NULL, 0},
  {"id", RISK_READ_ONLY, "only prints the user", NULL, NULL, 0},
  {"groups", RISK_READ_ONLY, "only prints groups", NULL, NULL, 0},
  {"who", RISK_READ_ONLY, "only lists users", NULL, NULL, 0},
  {"w", RISK_READ_ONLY, "only lists users", NULL, NULL, 0},
  {"users", RISK_READ_ONLY, "only lists users", NULL, NULL, 0},
  {"last", RISK_READ_ONLY, "only lists logins", NULL, NULL, 0},
  {"lastlog", RISK_READ_ONLY, "only lists logins", NULL, NULL, 0},
  {"hostname", RISK_READ_ONLY, "only prints the host name", chk_hostname, NULL, 0},
  {"date", RISK_READ_ONLY, "only prints the time", chk_date, NULL, 0},
  {"nproc", RISK_READ_ONLY, "only counts CPUs", NULL, NULL, 0},
  {"lscpu", RISK_READ_ONLY, "only reports CPUs", NULL, NULL, 0},
  {"lsblk", RISK_READ_ONLY, "only lists block devices", NULL, NULL, 0},
  {"lsusb", RISK_READ_ONLY, "only lists devices", NULL, NULL, 0},
  {"lspci", RISK_READ_ONLY, "only lists devices", NULL, NULL, 0},
  {"lsof", RISK_READ_ONLY, "only lists open files", NULL, NULL, 0},
  {"lsmod", RISK_READ_ONLY, "only lists modules", NULL, NULL, 0},
  {"modinfo", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"blkid", RISK_READ_ONLY, "only lists file systems", NULL, NULL, 0},
  {"findmnt", RISK_READ_ONLY, "only lists mounts", NULL, NULL, 0},
  {"vmstat", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"iostat", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"mpstat", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"sensors", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"dmesg", RISK_READ_ONLY, "only reads kernel messages", chk_dmesg, NULL, 0},
  {"getent", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"locale", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"printenv", RISK_READ_ONLY, "only prints the environment", NULL, NULL, 0},
  {"tty", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"arch", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"getconf", RISK_READ_ONLY, "only reports", NULL, NULL, 0},
  {"lsattr", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"getfacl", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"dpkg-query", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"apt-cache", RISK_READ_ONLY, "only reads", NULL, NULL, 0},
  {"atq", RISK_READ_ONLY, "only lists jobs", NULL, NULL, 0},
  {"iptables-save", RISK_READ_ONLY, "only prints rules", NULL, NULL, 0},
  {"crontab", RISK_READ_ONLY, "-l only lists scheduled jobs", chk_crontab, NULL, 0},
  {"mount", RISK_READ_ONLY, "only lists mounts", chk_mount, NULL, 0},
  {"swapon", RISK_READ_ONLY, "only lists swap", chk_swapon, NULL, 0},
  {"sysctl", RISK_READ_ONLY, "only reads kernel settings", chk_sysctl, NULL, 0},
  {"journalctl", RISK_READ_ONLY, "only reads logs", chk_journalctl, NULL, 0},
  {"systemctl", RISK_READ_ONLY, "only lists units", chk_systemctl, NULL, 0},
  {"service", RISK_READ_ONLY, "only shows service status", chk_service, NULL, 0},
  {"timedatectl", RISK_READ_ONLY, "only shows settings", chk_ctl, NULL, 0},
  {"hostnamectl", RISK_READ_ONLY, "only shows settings", chk_ctl, NULL, 0},
  {"localectl", RISK_READ_ONLY, "only shows settings", chk_ctl, NULL, 0},
  /* network */
  {"ss", RISK_READ_ONLY, "only lists sockets", NULL, NULL, 0},
  {"netstat", RISK_READ_ONLY, "only lists sockets", NULL, NULL, 0},
  {"ip", RISK_READ_ONLY, "only shows network state", chk_ip, NULL, 0},
  {"ifconfig", RISK_READ_ONLY, "only shows interfaces", chk_ifconfig, NULL, 0},
  {"route", RISK_READ_ONLY, "only shows routes", chk_route, NULL, 0},
  {"ping", RISK_READ_ONLY, "only probes a host", NULL, NULL, 0},
  {"dig", RISK_READ_ONLY, "only queries DNS", NULL, NULL, 0},
  {"nslookup", RISK_READ_ONLY, "only queries DNS", NULL, NULL, 0},
  {"host", RISK_READ_ONLY, "only queries DNS", NULL, NULL, 0},
  {"traceroute", RISK_READ_ONLY, "only probes a route", NULL, NULL, 0},
  {"tracepath", RISK_READ_ONLY, "only probes a route", NULL, NULL, 0},
  {"mtr", RISK_READ_ONLY, "only probes a route", NULL, NULL, 0},
  {"curl", RISK_READ_ONLY, "only fetches to stdout", chk_curl, NULL, 0},
  {"wget", RISK_READ_ONLY, "only fetches to stdout", chk_wget, NULL, 0},
  {"ssh", RISK_WRITE, "runs commands on another host", chk_ssh, NULL, 0},
  {"scp", RISK_WRITE, "copies files between hosts", NULL, NULL, 0},
  {"sftp", RISK_WRITE, "copies files between hosts", NULL, NULL, 0},
  {"nc", RISK_WRITE, "opens network connections", NULL, NULL, 0},
  {"ncat", RISK_WRITE, "opens network connections", NULL, NULL, 0},
  {"socat", RISK_WRITE, "opens network connections", NULL, NULL, 0},
  /* text-only builtins and tools */
  {"echo", RISK_READ_ONLY, "only prints", NULL, NULL, F_TEXT},
  {"printf", RISK_READ_ONLY, "only prints", NULL, NULL, F_TEXT},
  {"true", RISK_READ_ONLY, "does nothing", NULL, NULL, F_TEXT},
  {"false", RISK_READ_ONLY, "does nothing", NULL, NULL, F_TEXT},
  {":", RISK_READ_ONLY, "does nothing", NULL, NULL, F_TEXT},
  {"sleep", RISK_READ_ONLY, "only waits", NULL, NULL, F_TEXT},
  {"test", RISK_READ_ONLY, "only tests a condition", NULL, NULL, 0},
  {"[", RISK_READ_ONLY, "only tests a condition", NULL, NULL, 0},
  {"[[", RISK_READ_ONLY, "only tests a condition", NULL, NULL, 0},
  {"seq", RISK_READ_ONLY, "only prints", NULL, NULL, F_TEXT},
  {"yes", RISK_READ_ONLY, "only prints", NULL, NULL, F_TEXT},
  {"expr", RISK_READ_ONLY, "only computes", NULL, NULL, F_TEXT},
  {"basename", RISK_READ_ONLY, "only edits a name", NULL, NULL, F_TEXT},
  {"dirname", RISK_READ_ONLY, "only edits a name", NULL, NULL, F_TEXT},
  {"which", RISK_READ_ONLY, "only looks up a name", NULL, NULL, F_TEXT},
  {"whereis", RISK_READ_ONLY, "only looks up a name", NULL, NULL, F_TEXT},
  {"type", RISK_READ_ONLY, "only looks up a name", NULL, NULL, F_TEXT},
  {"pwd", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"cd", RISK_READ_ONLY, "only changes directory", NULL, NULL, 0},
  {"read", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"set", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"unset", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"shopt", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"ulimit", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"umask", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"wait", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"jobs", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"exit", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"return", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"break", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"continue", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"shift", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"getopts", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"hash", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"let", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"times", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"disown", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"bg", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"fg", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"help", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"unalias", RISK_READ_ONLY, "is a shell builtin", NULL, NULL, 0},
  {"export", RISK_READ_ONLY, "only sets shell variables", chk_assign, NULL, 0},
  {"declare", RISK_READ_ONLY, "only sets shell variables", chk_assign, NULL, 0},
  {"typeset", RISK_READ_ONLY, "only sets shell variables", chk_assign, NULL, 0},
  {"local", RISK_READ_ONLY, "only sets shell variables", chk_assign, NULL, 0},
  {"readonly", RISK_READ_ONLY, "only sets shell variables", chk_assign, NULL, 0},
  {"alias", RISK_READ_ONLY, "only defines a shortcut", chk_alias, NULL, 0},
  {"trap", RISK_READ_ONLY, "only sets a signal handler", chk_trap, NULL, 0},
  /* wrappers: judged with the command they run */
  {"sudo", RISK_ADMIN, "opens a root shell", NULL, wrap_sudo, 0},
  {"doas", RISK_ADMIN, "opens a root shell", NULL, wrap_doas, 0},
  {"pkexec", RISK_ADMIN, "opens a root shell", NULL, wrap_pkexec, 0},
  {"chroot", RISK_ADMIN, "runs a shell in another root", NULL, wrap_chroot, 0},
  {"su", RISK_ADMIN, "switches to another user", chk_su, NULL, 0},
  {"runuser", RISK_ADMIN, "switches to another user", chk_su, NULL, 0},
  {"env", RISK_READ_ONLY, "only prints the environment", NULL, wrap_env, 0},
  {"nice", RISK_READ_ONLY, "only prints the niceness", NULL, wrap_nice, 0},
  {"nohup", RISK_READ_ONLY, "runs nothing", NULL, wrap_first, 0},
  {"setsid", RISK_READ_ONLY, "runs nothing", NULL, wrap_first, 0},
  {"unbuffer", RISK_READ_ONLY, "runs nothing", NULL, wrap_first, 0},
  {"builtin", RISK_READ_ONLY, "runs nothing", NULL, wrap_first, 0},
  {"busybox", RISK_READ_ONLY, "only lists its applets", NULL, wrap_first, 0},
  {"timeout", RISK_READ_ONLY, "runs nothing", NULL, wrap_timeout, 0},
  {"ionice", RISK_READ_ONLY, "only prints the I/O priority", NULL, wrap_ionice, 0},
  {"stdbuf", RISK_READ_ONLY, "runs nothing", NULL, wrap_stdbuf, 0},
  {"xargs", RISK_READ_ONLY, "only runs echo", NULL, wrap_xargs, 0},
  {"time", RISK_READ_ONLY, "runs nothing", NULL, wrap_time, 0},
  {"exec", RISK_READ_ONLY, "only applies redirections", NULL, wrap_exec, 0},
  {"command", RISK_READ_ONLY, "-v only looks up a name", NULL, wrap_command, 0},
  {"watch", RISK_READ_ONLY, "repeats nothing", chk_watch, NULL, 0},
  {"eval", RISK_READ_ONLY, "runs nothing", chk_eval, NULL, F_CODE},
  {"source", RISK_WRITE, "runs a script file that cannot be checked", NULL, NULL, F_CODE},
  {".", RISK_WRITE, "runs a script file that cannot be checked", NULL, NULL, F_CODE},
  /* shells and interpreters */
  {"sh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"bash", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"rbash", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"dash", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"zsh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"ksh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"mksh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"ash", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"yash", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"posh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"fish", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"csh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"tcsh", RISK_READ_ONLY, "only prints its version", chk_shell, NULL, F_CODE},
  {"python", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"python2", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"python3", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"perl", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"ruby", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"node", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"nodejs", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"php", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"lua", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  {"tclsh", RISK_READ_ONLY, "only prints its version", chk_interp, NULL, F_CODE},
  /* changing files */
  {"rm", RISK_WRITE, "deletes files", chk_rm, NULL, 0},
  {"unlink", RISK_WRITE, "deletes a file", chk_unlink, NULL, 0},
  {"mv", RISK_WRITE, "moves files", chk_mv, NULL, 0},
  {"cp", RISK_WRITE, "copies files", chk_cp, NULL, 0},
  {"ln", RISK_WRITE, "creates links", chk_ln, NULL, 0},
  {"install", RISK_WRITE, "installs files", chk_install, NULL, 0},
  {"rsync", RISK_WRITE, "copies files", chk_rsync, NULL, 0},
  {"mkdir", RISK_WRITE, "creates directories", chk_mkdir, NULL, 0},
  {"rmdir", RISK_WRITE, "removes directories", chk_rmdir, NULL, 0},
  {"touch", RISK_WRITE, "creates or updates files", chk_touch, NULL, 0},
  {"truncate", RISK_WRITE, "cuts files", chk_truncate, NULL, 0},
  {"shred", RISK_WRITE, "destroys file contents", chk_shred, NULL, 0},
  {"chmod", RISK_WRITE, "changes permissions", chk_perm, NULL, 0},
  {"chown", RISK_WRITE, "changes owners", chk_perm, NULL, 0},
  {"chgrp", RISK_WRITE, "changes groups", chk_perm, NULL, 0},
  {"setfacl", RISK_WRITE, "changes permissions", chk_setfacl, NULL, 0},
  {"split", RISK_WRITE, "writes files", NULL, NULL, 0},
  {"csplit", RISK_WRITE, "writes files", NULL, NULL, 0},
  {"patch", RISK_WRITE, "edits files", NULL, NULL, 0},
  {"mktemp", RISK_WRITE, "creates a temporary file", NULL, NULL, 0},
  {"mkfifo", RISK_WRITE, "creates a pipe file", NULL, NULL, 0},
  {"zip", RISK_WRITE, "writes an archive", NULL, NULL, 0},
  {"vi", RISK_WRITE, "opens an editor", NULL, NULL, 0},
  {"vim", RISK_WRITE, "opens an editor", NULL, NULL, 0},
  {"nano", RISK_WRITE, "opens an editor", NULL, NULL, 0},
  {"emacs", RISK_WRITE, "opens an editor", NULL, NULL, 0},
  /* building and developing */
  {"git", RISK_READ_ONLY, "only shows help", chk_git, NULL, 0},
  {"make", RISK_READ_ONLY, "-n only prints recipes", chk_make, NULL, 0},
  {"ninja", RISK_READ_ONLY, "-n only prints build steps", chk_ninja, NULL, 0},
  {"cmake", RISK_WRITE, "configures or builds a project", NULL, NULL, 0},
  {"ctest", RISK_WRITE, "runs tests", NULL, NULL, 0},
  {"meson", RISK_WRITE, "configures or builds a project", NULL, NULL, 0},
  {"gcc", RISK_WRITE, "compiles code", NULL, NULL, 0},
  {"cc", RISK_WRITE, "compiles code", NULL, NULL, 0},
  {"clang", RISK_WRITE, "compiles code", NULL, NULL, 0},
  {"g++", RISK_WRITE, "compiles code", NULL, NULL, 0},
  {"npm", RISK_READ_ONLY, "only prints its version", chk_npm, NULL, 0},
  {"yarn", RISK_READ_ONLY, "only prints its version", chk_npm, NULL, 0},
  {"pnpm", RISK_READ_ONLY, "only prints its version", chk_npm, NULL, 0},
  {"npx", RISK_WRITE, "runs package code", NULL, NULL, 0},
  {"pip", RISK_READ_ONLY, "only prints its version", chk_pip, NULL, 0},
  {"pip3", RISK_READ_ONLY, "only prints its version", chk_pip, NULL, 0},
  {"gem", RISK_READ_ONLY, "only prints its version", chk_gem, NULL, 0},
  {"cargo", RISK_READ_ONLY, "only prints its version", chk_cargo, NULL, 0},
  {"go", RISK_READ_ONLY, "only prints help", chk_go, NULL, 0},
  {"docker", RISK_READ_ONLY, "only prints help", chk_docker, NULL, 0},
  {"podman", RISK_READ_ONLY, "only prints help", chk_docker, NULL, 0},
  {"docker-compose", RISK_READ_ONLY, "only prints help", chk_compose, NULL, 0},
  {"kubectl", RISK_READ_ONLY, "only prints help", chk_kubectl, NULL, 0},
  {"sqlite3", RISK_WRITE, "can change a database", NULL, NULL, 0},
  {"psql", RISK_WRITE, "can change a database", NULL, NULL, 0},
  {"mysql", RISK_WRITE, "can change a database", NULL, NULL, 0},
  {"redis-cli", RISK_WRITE, "can change a database", NULL, NULL, 0},
  {"openssl", RISK_WRITE, "can write keys and files", NULL, NULL, 0},
  {"ssh-keygen", RISK_WRITE, "writes keys", NULL, NULL, 0},
  {"strace", RISK_WRITE, "runs and traces a program", NULL, NULL, 0},
  {"gdb", RISK_WRITE, "runs and controls a program", NULL, NULL, 0},
  {"screen", RISK_WRITE, "starts a session", NULL, NULL, 0},
  {"tmux", RISK_WRITE, "starts a session", NULL, NULL, 0},
  {"at", RISK_WRITE, "schedules a command", NULL, NULL, 0},
  {"batch", RISK_WRITE, "schedules a command", NULL, NULL, 0},
  {"atrm", RISK_WRITE, "removes scheduled jobs", NULL, NULL, 0},
  {"unshare", RISK_WRITE, "runs in new namespaces", NULL, NULL, 0},
  /* processes */
  {"kill", RISK_READ_ONLY, "-l only lists signals", chk_kill, NULL, 0},
  {"pkill", RISK_WRITE, "signals processes", chk_pkill, NULL, 0},
  {"killall", RISK_WRITE, "signals processes", chk_pkill, NULL, 0},
  /* administration */
  {"apt", RISK_READ_ONLY, "only prints help", chk_apt, NULL, 0},
  {"apt-get", RISK_READ_ONLY, "only prints help", chk_apt, NULL, 0},
  {"aptitude", RISK_READ_ONLY, "only prints help", chk_apt, NULL, 0},
  {"dpkg", RISK_READ_ONLY, "only reads the package database", chk_dpkg, NULL, 0},
  {"yum", RISK_READ_ONLY, "only prints help", chk_yum, NULL, 0},
  {"dnf", RISK_READ_ONLY, "only prints help", chk_yum, NULL, 0},
  {"rpm", RISK_READ_ONLY, "only reads the package database", chk_rpm, NULL, 0},
  {"pacman", RISK_READ_ONLY, "only prints help", chk_pacman, NULL, 0},
  {"apk", RISK_READ_ONLY, "only prints help", chk_apk, NULL, 0},
  {"snap", RISK_READ_ONLY, "only prints help", chk_snap, NULL, 0},
  {"flatpak", RISK_ADMIN, "installs or removes applications", NULL, NULL, 0},
  {"zypper", RISK_ADMIN, "changes system packages", NULL, NULL, 0},
  {"useradd", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"userdel", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"usermod", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"adduser", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"deluser", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"groupadd", RISK_ADMIN, "changes groups", NULL, NULL, 0},
  {"groupdel", RISK_ADMIN, "changes groups", NULL, NULL, 0},
  {"groupmod", RISK_ADMIN, "changes groups", NULL, NULL, 0},
  {"gpasswd", RISK_ADMIN, "changes groups", NULL, NULL, 0},
  {"passwd", RISK_ADMIN, "changes passwords", NULL, NULL, 0},
  {"chpasswd", RISK_ADMIN, "changes passwords", NULL, NULL, 0},
  {"chage", RISK_ADMIN, "changes password ageing", NULL, NULL, 0},
  {"newusers", RISK_ADMIN, "changes user accounts", NULL, NULL, 0},
  {"vipw", RISK_ADMIN, "edits user accounts", NULL, NULL, 0},
  {"visudo", RISK_ADMIN, "edits sudo rules", NULL, NULL, 0},
  {"umount", RISK_ADMIN, "unmounts file systems", NULL, NULL, 0},
  {"swapoff", RISK_ADMIN, "turns swap off", NULL, NULL, 0},
  {"iptables", RISK_READ_ONLY, "only lists firewall rules", chk_iptables, NULL, 0},
  {"ip6tables", RISK_READ_ONLY, "only lists firewall rules", chk_iptables, NULL, 0},
  {"iptables-restore", RISK_ADMIN, "replaces firewall rules", NULL, NULL, 0},
  {"nft", RISK_READ_ONLY, "only lists the ruleset", chk_nft, NULL, 0},
  {"ufw", RISK_READ_ONLY, "only shows firewall status", chk_ufw, NULL, 0},
  {"firewall-cmd", RISK_READ_ONLY, "only shows the firewall", chk_firewalld, NULL, 0},
  {"modprobe", RISK_ADMIN, "loads kernel modules", NULL, NULL, 0},
  {"insmod", RISK_ADMIN, "loads kernel modules", NULL, NULL, 0},
  {"rmmod", RISK_ADMIN, "unloads kernel modules", NULL, NULL, 0},
  {"depmod", RISK_ADMIN, "rebuilds module lists", NULL, NULL, 0},
  {"ldconfig", RISK_ADMIN, "changes the linker cache", NULL, NULL, 0},
  {"update-alternatives", RISK_ADMIN, "changes system defaults", NULL, NULL, 0},
  {"update-grub", RISK_ADMIN, "rewrites the boot menu", NULL, NULL, 0},
  {"grub-install", RISK_ADMIN, "rewrites the boot loader", NULL, NULL, 0},
  {"chattr", RISK_ADMIN, "changes file attributes", NULL, NULL, 0},
  {"mknod", RISK_ADMIN, "creates device files", NULL, NULL, 0},
  {"nsenter", RISK_ADMIN, "enters other namespaces", NULL, NULL, 0},
  {"tune2fs", RISK_ADMIN, "changes a file system", NULL, NULL, 0},
  {"resize2fs", RISK_ADMIN, "resizes a file system", NULL, NULL, 0},
  {"e2fsck", RISK_ADMIN, "repairs a file system", NULL, NULL, 0},
  {"fsck", RISK_ADMIN, "repairs a file system", NULL, NULL, 0},
  {"pvcreate", RISK_ADMIN, "changes volumes", NULL, NULL, 0},
  {"vgcreate", RISK_ADMIN, "changes volumes", NULL, NULL, 0},
  {"lvcreate", RISK_ADMIN, "changes volumes", NULL, NULL, 0},
  {"lvremove", RISK_ADMIN, "changes volumes", NULL, NULL, 0},
  {"lvextend", RISK_ADMIN, "changes volumes", NULL, NULL, 0},
  {"cryptsetup", RISK_ADMIN, "changes encrypted volumes", NULL, NULL, 0},
  {"hwclock", RISK_ADMIN, "sets the hardware clock", NULL, NULL, 0},
  {"updatedb", RISK_ADMIN, "rebuilds the file index", NULL, NULL, 0},
  {"setenforce", RISK_ADMIN, "changes SELinux", NULL, NULL, 0},
  /* destroying the host */
  {"reboot", RISK_BLOCKED, REBOOT_WHY, NULL, NULL, 0},
  {"halt", RISK_BLOCKED, REBOOT_WHY, NULL, NULL, 0},
  {"poweroff", RISK_BLOCKED, REBOOT_WHY, NULL, NULL, 0},
  {"shutdown", RISK_ADMIN, "-c only cancels a shutdown", chk_shutdown, NULL, 0},
  {"init", RISK_ADMIN, "changes the runlevel", chk_init, NULL, 0},
  {"telinit", RISK_ADMIN, "changes the runlevel", chk_init, NULL, 0},
  {"killall5", RISK_BLOCKED, "signals every process", NULL, NULL, 0},
  {"fdisk", RISK_ADMIN, "-l only reads partition tables", chk_fdisk, NULL, 0},
  {"sfdisk", RISK_ADMIN, "-l only reads partition tables", chk_fdisk, NULL, 0},
  {"gdisk", RISK_ADMIN, "-l only reads partition tables", chk_fdisk, NULL, 0},
  {"sgdisk", RISK_ADMIN, "-l only reads partition tables", chk_fdisk, NULL, 0},
  {"parted", RISK_ADMIN, "-l only reads partition tables", chk_fdisk, NULL, 0},
  {"cfdisk", RISK_BLOCKED, "rewrites partition tables", NULL, NULL, 0},
  {"wipefs", RISK_BLOCKED, "erases file system signatures", NULL, NULL, 0},
  {"blkdiscard", RISK_BLOCKED, "discards every block of a device", NULL, NULL, 0},
  {"mkswap", RISK_BLOCKED, "overwrites a device with swap", NULL, NULL, 0},
  {"mke2fs", RISK_BLOCKED, "makes a file system and erases the device", NULL, NULL, 0},
  {NULL, RISK_READ_ONLY, NULL, NULL, NULL, 0},
};

static const struct rule *rule_lookup(const char *name)
{
  for (const struct rule *r = rules; r->name; r++)
    if (streq(r->name, name))
      return r;
  return NULL;
}

/* python3.11, pip3.12, lua5.4: the versioned name of a known program. */
static const struct rule *rule_find(const char *name)
{
  const struct rule *r = rule_lookup(name);
  char buf[64];
  size_t n = strlen(name);

  if (r || n >= sizeof buf)
    return r;
  while (n > 0 && (isdigit((unsigned char)name[n - 1]) || name[n - 1] == '.'))
    n--;
  if (n == 0 || n == strlen(name))
    return NULL;
  memcpy(buf, name, n);
  buf[n] = '\0';
  return rule_lookup(buf);
}

/* ---- one simple command --------------------------------------------------------- */

static bool std_location(const char *p)
{
  char n[POLICY_PATH];
  bool dyn;
  char *slash;

  if (path_norm(p, n, &dyn) != P_ABS || dyn)
    return false;
  slash = strrchr(n, '/');
  if (slash == n)
    return false;
  *slash = '\0';
  return in_words("/bin /sbin /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin", n);
}

/* The name a program is judged by; raises v for where it comes from. */
static const char *judge_program(const struct cmd *c, struct policy_verdict *v)
{
  const char *p = c->argv[0];
  unsigned f = in_words("[ [[", p) ? 0u : wfl(c, 0);

  if (f & W_DL)
    v_raise(v, RISK_BLOCKED, "running the output of a download runs unreviewed code");
  else if (f & (W_EXPAND | W_GLOB))
    v_raise(v, RISK_WRITE, "program '%.60s' is only known at run time", p);
  if (!strchr(p, '/'))
    return p;
  if (!std_location(p))
    v_raise(v, RISK_WRITE, "'%.80s' is not in a standard program directory", p);
  return base_name(p);
}

static void judge_unknown(const struct cmd *c, const char *name, struct policy_verdict *v)
{
  judge_secrets(c, name, v);
  if (starts(name, "mkfs"))
    v_raise(v, RISK_BLOCKED, "%.60s makes a new file system and erases the device", name);
  else
    v_raise(v, RISK_WRITE, "unknown program '%.60s'", name);
}

static void judge_cmd(const struct cmd *c0, struct policy_verdict *v)
{
  struct cmd c = *c0;

  if (c.depth > POLICY_MAX_DEPTH) {
    v_raise(v, RISK_BLOCKED, "command is too deeply nested to check");
    return;
  }
  for (;;) {
    if (c.argc < 1 || !c.argv[0] || !c.argv[0][0]) {
      v_raise(v, RISK_BLOCKED, "empty command");
      return;
    }
    const char *name = judge_program(&c, v);
    const struct rule *r = rule_find(name);
    if (!r) {
      judge_unknown(&c, name, v);
      return;
    }
    if (!(r->flags & F_TEXT))
      judge_secrets(&c, name, v);
    if ((r->flags & F_CODE) && cmd_has_dl(&c))
      v_raise(v, RISK_BLOCKED, "%s runs downloaded code unreviewed", name);
    int k = r->unwrap ? r->unwrap(&c, v) : 0;
    if (k > 0) {
      c = cmd_shift(&c, k);
      continue;
    }
    if (tl_scope)
      scope_note_cmd(&c, name);
    if (r->check)
      r->check(&c, v);
    v_raise(v, r->risk, "%s %s", name, r->why);
    return;
  }
}

/* The command a wrapper chain finally runs (sudo env nice CMD → CMD). */
static struct cmd cmd_effective(const struct cmd *c)
{
  struct policy_verdict scratch;
  struct cmd e = *c;

  v_init(&scratch);
  while (e.argc > 0 && e.argv[0][0]) {
    const struct rule *r = rule_find(base_name(e.argv[0]));
    int k = r && r->unwrap ? r->unwrap(&e, &scratch) : 0;
    if (k <= 0)
      break;
    e = cmd_shift(&e, k);
  }
  return e;
}

/* ---- shell scripts --------------------------------------------------------------- */

enum { SH_MAX_HEREDOC = 8, SH_MAX_FN = 16 };

struct sh {
  const char *p, *end;          /* the script */
  int depth;
  struct policy_verdict *v;
  char *arena;                  /* unquoted word text */
  size_t used, cap;
  const char **w;               /* words of the current simple command */
  unsigned char *wf;
  int nw, maxw;
  bool dl;                      /* a downloader prints to stdout in here */
  const char *pipe_dl;          /* downloader feeding the current pipeline */
  bool bad;                     /* could not parse all of it */
  int in_case;                  /* open case … esac */
  bool case_pat;                /* reading case patterns up to ')' */
  struct { const char *delim; bool strip, quoted; } here[SH_MAX_HEREDOC];
  int nhere;
  const char *here_s;           /* the here-document of this line */
  size_t here_n;
  char fn[SH_MAX_FN][32];       /* shell functions defined so far */
  int nfn;
};

static bool sh_word_end(char ch)
{
  return ch == '\0' || strchr(" \t\n;&|()<>", ch) != NULL;
}

static void sh_put(struct sh *sp, char ch)
{
  if (sp->used + 1 >= sp->cap) {
    sp->bad = true;
    return;
  }
  sp->arena[sp->used++] = ch;
}

static void sh_putn(struct sh *sp, const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    sh_put(sp, s[i]);
}

static void sh_push(struct sh *sp, const char *text, unsigned fl)
{
  if (sp->nw >= sp->maxw) {
    sp->bad = true;
    return;
  }
  sp->w[sp->nw] = text;
  sp->wf[sp->nw++] = (unsigned char)fl;
}

static void sh_blanks(struct sh *sp)
{
  while (sp->p < sp->end) {
    if (*sp->p == ' ' || *sp->p == '\t')
      sp->p++;
    else if (*sp->p == '\\' && sp->p + 1 < sp->end && sp->p[1] == '\n')
      sp->p += 2;
    else
      break;
  }
}

/* End of a double-quoted string that starts after p[-1]; NULL if open. */
static const char *dq_end(const char *p, const char *end)
{
  for (; p < end; p++) {
    if (*p == '\\' && p + 1 < end)
      p++;
    else if (*p == '"')
      return p;
  }
  return NULL;
}

/* The ')' that closes the '(' at p, skipping quotes; NULL if none. */
static const char *sh_match(const char *p, const char *end)
{
  int depth = 0;

  for (; p < end; p++) {
    if (*p == '\\' && p + 1 < end)
      p++;
    else if (*p == '\'' && !(p = memchr(p + 1, '\'', (size_t)(end - p - 1))))
      return NULL;
    else if (*p == '"' && !(p = dq_end(p + 1, end)))
      return NULL;
    else if (*p == '(')
      depth++;
    else if (*p == ')' && --depth == 0)
      return p;
  }
  return NULL;
}

/* Judges the code inside $( ), ` `, <( ); returns the word flags. */
static unsigned sh_inner(struct sh *sp, const char *s, size_t n)
{
  bool dl = false;

  script_judge(s, n, sp->depth + 1, sp->v, &dl);
  return W_EXPAND | (dl ? W_DL : 0u);
}

/* $( … ) or $(( … )) at sp->p; the raw text goes into the word. */
static unsigned sh_subst(struct sh *sp)
{
  const char *open = sp->p + 1, *close = sh_match(open, sp->end);
  unsigned fl = W_EXPAND;

  if (!close) {
    sp->bad = true;
    return 0;
  }
  if (open[1] == '(') {   /* arithmetic: only substitutions inside run */
    size_t n = (size_t)(close - open);
    if (memmem(open, n, "$(", 2) || memchr(open, '`', n))
      fl = sh_inner(sp, open + 1, n - 1);
  } else {
    fl = sh_inner(sp, open + 1, (size_t)(close - open - 1));
  }
  sh_putn(sp, sp->p, (size_t)(close + 1 - sp->p));
  sp->p = close + 1;
  return fl;
}

static unsigned sh_backtick(struct sh *sp)
{
  const char *q = sp->p + 1;
  unsigned fl;

  while (q < sp->end && *q != '`')
    q += *q == '\\' && q + 1 < sp->end ? 2 : 1;
  if (q >= sp->end) {
    sp->bad = true;
    return 0;
  }
  fl = sh_inner(sp, sp->p + 1, (size_t)(q - sp->p - 1));
  sh_putn(sp, sp->p, (size_t)(q + 1 - sp->p));
  sp->p = q + 1;
  return fl;
}

/* ${ … }: substitutions inside (${x:-$(cmd)}) run too. */
static unsigned sh_brace(struct sh *sp)
{
  const char *q = sp->p + 2;
  unsigned fl = W_EXPAND;
  int depth = 1;

  for (; q < sp->end && depth; q++)
    depth += (*q == '{') - (*q == '}');
  if (depth) {
    sp->bad = true;
    return 0;
  }
  size_t n = (size_t)(q - 1 - (sp->p + 2));
  if (memmem(sp->p + 2, n, "$(", 2) || memchr(sp->p + 2, '`', n))
    fl = sh_inner(sp, sp->p + 2, n);
  sh_putn(sp, sp->p, (size_t)(q - sp->p));
  sp->p = q;
  return fl;
}

/* $'…' with C escapes. */
static void sh_ansi(struct sh *sp)
{
  static const char from[] = "ntrabef0", to[] = "\n\t\r\a\b\033\f";

  sp->p += 2;
  while (sp->p < sp->end && *sp->p != '\'') {
    if (*sp->p == '\\' && sp->p + 1 < sp->end) {
      const char *e = strchr(from, sp->p[1]);
      sh_put(sp, e && sp->p[1] != '0' ? to[e - from] : sp->p[1]);
      sp->p += 2;
    } else {
      sh_put(sp, *sp->p++);
    }
  }
  if (sp->p >= sp->end)
    sp->bad = true;
  else
    sp->p++;
}

static unsigned sh_dollar(struct sh *sp, bool in_dq)
{
  const char *p = sp->p;
  char nx = p + 1 < sp->end ? p[1] : '\0';
  size_t n = 2;

  if (nx == '\'' && !in_dq) {
    sh_ansi(sp);
    return 0;
  }
  if (nx == '(')
    return sh_subst(sp);
  if (nx == '{')
    return sh_brace(sp);
  if (nx && strchr("@*#?$!-0123456789", nx)) {
    sh_putn(sp, p, 2);
  } else if (isalpha((unsigned char)nx) || nx == '_') {
    while (p + n < sp->end && (isalnum((unsigned char)p[n]) || p[n] == '_'))
      n++;
    sh_putn(sp, p, n);
  } else {
    sh_put(sp, '$');
    sp->p++;
    return 0;
  }
  sp->p += n;
  return W_EXPAND;
}

static unsigned sh_dquote(struct sh *sp)
{
  unsigned fl = 0;

  sp->p++;
  while (sp->p < sp->end && *sp->p != '"' && !sp->bad) {
    char ch = *sp->p;
    if (ch == '\\' && sp->p + 1 < sp->end && strchr("$`\"\\\n", sp->p[1])) {
      if (sp->p[1] != '\n')
        sh_put(sp, sp->p[1]);
      sp->p += 2;
    } else if (ch == '$') {
      fl |= sh_dollar(sp, true);
    } else if (ch == '`') {
      fl |= sh_backtick(sp);
    } else {
      sh_put(sp, ch);
      sp->p++;
    }
  }
  if (sp->p >= sp->end)
    sp->bad = true;
  else
    sp->p++;
  return fl;
}

static void sh_squote(struct sh *sp)
{
  const char *q = memchr(sp->p + 1, '\'', (size_t)(sp->end - sp->p - 1));

  if (!q) {
    sp->bad = true;
    sp->p = sp->end;
    return;
  }
  sh_putn(sp, sp->p + 1, (size_t)(q - sp->p - 1));
  sp->p = q + 1;
}

static void sh_backslash(struct sh *sp)
{
  if (sp->p + 1 >= sp->end) {
    sp->p++;
    return;
  }
  if (sp->p[1] != '\n')
    sh_put(sp, sp->p[1]);
  sp->p += 2;
}

/* One word, unquoted into the arena, pushed with what it holds. */
static void sh_word(struct sh *sp)
{
  size_t start = sp->used;
  unsigned fl = 0;

  while (sp->p < sp->end && !sh_word_end(*sp->p) && !sp->bad) {
    char ch = *sp->p;
    if (ch == '\\')
      sh_backslash(sp);
    else if (ch == '\'')
      sh_squote(sp);
    else if (ch == '"')
      fl |= sh_dquote(sp);
    else if (ch == '$')
      fl |= sh_dollar(sp, false);
    else if (ch == '`')
      fl |= sh_backtick(sp);
    else {
      fl |= strchr("*?[", ch) ? W_GLOB : 0u;
      sh_put(sp, ch);
      sp->p++;
    }
  }
  sh_put(sp, '\0');
  if (!sp->bad)
    sh_push(sp, sp->arena + start, fl);
}

/* <( … ) and >( … ): a word whose code runs. */
static void sh_procsub(struct sh *sp)
{
  const char *close = sh_match(sp->p + 1, sp->end);
  size_t start = sp->used;
  unsigned fl;

  if (!close) {
    sp->bad = true;
    return;
  }
  fl = sh_inner(sp, sp->p + 2, (size_t)(close - sp->p - 2));
  sh_putn(sp, sp->p, (size_t)(close + 1 - sp->p));
  sh_put(sp, '\0');
  sp->p = close + 1;
  if (!sp->bad)
    sh_push(sp, sp->arena + start, fl);
}

static void sh_heredoc_start(struct sh *sp, bool strip)
{
  const char *raw = sp->p;
  int before = sp->nw;

  sh_word(sp);
  if (sp->nw == before)
    return;
  sp->nw--;
  if (sp->nhere >= SH_MAX_HEREDOC) {
    sp->bad = true;
    return;
  }
  sp->here[sp->nhere].delim = sp->w[sp->nw];
  sp->here[sp->nhere].strip = strip;
  sp->here[sp->nhere].quoted = memchr(raw, '\'', (size_t)(sp->p - raw)) ||
                               memchr(raw, '"', (size_t)(sp->p - raw)) ||
                               memchr(raw, '\\', (size_t)(sp->p - raw));
  sp->nhere++;
}

/* Skips the bodies of the here-documents opened on the line just ended. */
static void sh_heredocs(struct sh *sp)
{
  for (int i = 0; i < sp->nhere; i++) {
    const char *body = sp->p, *stop = sp->end;
    size_t dl = strlen(sp->here[i].delim);
    while (sp->p < sp->end) {
      const char *eol = memchr(sp->p, '\n', (size_t)(sp->end - sp->p));
      const char *le = eol ? eol : sp->end, *ls = sp->p;
      while (sp->here[i].strip && ls < le && *ls == '\t')
        ls++;
      bool last = (size_t)(le - ls) == dl && memcmp(ls, sp->here[i].delim, dl) == 0;
      if (last)
        stop = sp->p;
      sp->p = eol ? eol + 1 : sp->end;
      if (last)
        break;
    }
    size_t n = (size_t)(stop - body);
    if (!sp->here[i].quoted && (memmem(body, n, "$(", 2) || memchr(body, '`', n)))
      v_raise(sp->v, RISK_WRITE, "here-document runs command substitutions");
    sp->here_s = body;
    sp->here_n = n;
  }
  sp->nhere = 0;
}

static bool sh_is_redir(const struct sh *sp)
{
  const char *p = sp->p, *q = p;

  if (*p == '&')
    return p + 1 < sp->end && p[1] == '>';
  while (q < sp->end && isdigit((unsigned char)*q))
    q++;
  if (q >= sp->end || (*q != '<' && *q != '>'))
    return false;
  return !(q == p && q + 1 < sp->end && q[1] == '(');
}

/* Reads the operator of a redirection; returns its W_* flag, 0 for a dup. */
static unsigned sh_redir_op(struct sh *sp, bool *here, bool *strip)
{
  const char *p = sp->p, *end = sp->end;
  bool out;
  unsigned fl;

  while (p < end && isdigit((unsigned char)*p))
    p++;
  if (*p == '&')
    p++;
  out = *p++ == '>';
  fl = out ? W_ROUT : W_RIN;
  if (p < end && out && (*p == '>' || *p == '|'))
    p++;
  else if (p < end && *p == '&') {
    p++;
    sh_blanks(sp);
    if (p < end && (isdigit((unsigned char)*p) || *p == '-'))
      fl = 0;   /* 2>&1, >&- */
  } else if (p < end && !out && *p == '>') {
    p++;
    fl = W_ROUT;   /* <> opens for writing */
  } else if (p < end && !out && *p == '<') {
    p++;
    if (p < end && *p == '<') {
      p++;
      fl = W_NOARG;   /* here-string */
    } else {
      *here = true;
      *strip = p < end && *p == '-';
      p += *strip;
    }
  }
  if (p < end && *p == '>' && out)
    p++;   /* &>> */
  sp->p = p;
  return fl;
}

static void sh_redir(struct sh *sp)
{
  bool here = false, strip = false;
  unsigned fl = sh_redir_op(sp, &here, &strip);

  sh_blanks(sp);
  if (fl == 0) {
    while (sp->p < sp->end && (isdigit((unsigned char)*sp->p) || *sp->p == '-'))
      sp->p++;
    return;
  }
  if (sp->p >= sp->end || sh_word_end(*sp->p)) {
    sp->bad = true;   /* a redirection without a target */
    return;
  }
  if (here) {
    sh_heredoc_start(sp, strip);
    return;
  }
  int before = sp->nw;
  sh_word(sp);
  if (sp->nw > before)
    sp->wf[sp->nw - 1] |= (unsigned char)fl;
}

static void sh_addfn(struct sh *sp, const char *name)
{
  if (sp->nfn < SH_MAX_FN && strlen(name) < sizeof sp->fn[0])
    memcpy(sp->fn[sp->nfn++], name, strlen(name) + 1);
}

static bool sh_isfn(const struct sh *sp, const char *name)
{
  for (int i = 0; i < sp->nfn; i++)
    if (streq(sp->fn[i], name))
      return true;
  return false;
}

/* Words that shape the script but run nothing themselves. */
static const char SH_RESERVED[] = "if then else elif fi do done while until ! { } esac coproc";

/* Index of the program among the words, skipping keywords and VAR=value;
 * nw when nothing runs. */
static int sh_cmd_start(struct sh *sp)
{
  int i = 0;

  while (i < sp->nw) {
    if (streq(sp->w[i], "esac") && sp->in_case)
      sp->in_case--;
    if (in_words(SH_RESERVED, sp->w[i]))
      i++;
    else if (streq(sp->w[i], "function") && i + 1 < sp->nw) {
      sh_addfn(sp, sp->w[i + 1]);
      i += 2;
    } else
      break;
  }
  if (i < sp->nw && in_words("for select case", sp->w[i])) {
    if (streq(sp->w[i], "case")) {
      sp->in_case++;
      sp->case_pat = true;
    }
    return sp->nw;   /* a loop or case header */
  }
  while (i < sp->nw && is_assignment(sp->w[i]))
    judge_assign(sp->w[i++], sp->v);
  return i;
}

/* Pipelines: a downloader feeding an interpreter runs unreviewed code. */
static void sh_pipeline(struct sh *sp, const struct cmd *e)
{
  if (e->argc < 1 || !e->argv[0][0])
    return;
  if (dl_stdout(e)) {
    sp->dl = true;
    if (!sp->pipe_dl)
      sp->pipe_dl = e->argv[0];
  } else if (sp->pipe_dl && runs_stdin(e)) {
    v_raise(sp->v, RISK_BLOCKED, "%s piped into %s runs downloaded code unreviewed",
            base_name(sp->pipe_dl), base_name(e->argv[0]));
  }
}

static void sh_judge(struct sh *sp, int k)
{
  struct cmd c = {sp->w + k, sp->wf + k, sp->nw - k, sp->depth};
  struct cmd e;

  if (sh_isfn(sp, c.argv[0])) {
    v_raise(sp->v, RISK_READ_ONLY, "%.60s runs a shell function of the script", c.argv[0]);
    return;
  }
  judge_cmd(&c, sp->v);
  e = cmd_effective(&c);
  sh_pipeline(sp, &e);
  if (sp->here_s && e.argc > 0 && in_words(SHELLS, base_name(e.argv[0])))
    script_judge(sp->here_s, sp->here_n, sp->depth + 1, sp->v, NULL);
}

static const char *sh_label(const struct sh *sp)
{
  for (int i = 0; i < sp->nw; i++)
    if (!(sp->wf[i] & (W_ROUT | W_RIN | W_NOARG)) && !is_assignment(sp->w[i]) &&
        !in_words(SH_RESERVED, sp->w[i]))
      return base_name(sp->w[i]);
  return "a redirection";
}

/* Judges redirections and drops their words from the argument list. */
static void sh_redirs(struct sh *sp)
{
  const char *label = sh_label(sp);
  int m = 0;

  for (int i = 0; i < sp->nw; i++) {
    unsigned f = sp->wf[i];
    if (f & W_ROUT)
      judge_write(label, "redirects output to", sp->w[i], sp->v);
    else if ((f & W_RIN) && word_secret(sp->w[i]))
      v_raise(sp->v, RISK_ADMIN, "%s reads secret file '%.80s'", label, sp->w[i]);
    if (f & (W_ROUT | W_RIN | W_NOARG))
      continue;
    sp->w[m] = sp->w[i];
    sp->wf[m++] = sp->wf[i];
  }
  sp->nw = m;
}

/* The end of a simple command (at ; & | newline ( ) or the end). */
static void sh_end(struct sh *sp, bool piped)
{
  if (sp->case_pat) {   /* pattern words wait for ')' */
    if (sp->nw == 1 && streq(sp->w[0], "esac")) {
      sp->case_pat = false;
      sp->in_case -= sp->in_case > 0;
      sp->nw = 0;
    }
    return;
  }
  sh_redirs(sp);
  int k = sh_cmd_start(sp);
  if (k < sp->nw)
    sh_judge(sp, k);
  if (!piped)
    sp->pipe_dl = NULL;
  sp->nw = 0;
  sp->here_s = NULL;
  sp->here_n = 0;
}

/* (( … )) as a command: arithmetic, unless substitutions hide inside. */
static void sh_arith_cmd(struct sh *sp)
{
  const char *close = sh_match(sp->p, sp->end);
  size_t n;

  if (!close) {
    sp->bad = true;
    return;
  }
  n = (size_t)(close - sp->p);
  if (memmem(sp->p, n, "$(", 2) || memchr(sp->p, '`', n))
    sh_inner(sp, sp->p + 1, n - 1);
  sp->p = close + 1;
}

/* NAME ( ) or function NAME ( ): a function definition, not a subshell. */
static bool sh_fundef(struct sh *sp)
{
  const char *q = sp->p + 1;

  if (sp->nw != 1 && !(sp->nw == 2 && streq(sp->w[0], "function")))
    return false;
  while (q < sp->end && (*q == ' ' || *q == '\t'))
    q++;
  if (q >= sp->end || *q != ')')
    return false;
  sh_addfn(sp, sp->w[sp->nw - 1]);
  sp->nw = 0;
  sp->p = q + 1;
  return true;
}

static void sh_paren(struct sh *sp, char ch)
{
  if (ch == ')' && (sp->case_pat || (sp->nw > 0 && streq(sp->w[0], "case")))) {
    if (!sp->case_pat)
      sp->in_case++;
    sp->case_pat = false;   /* the pattern ends: its words run nothing */
    sp->nw = 0;
    sp->p++;
  } else if (ch == '(' && sp->case_pat) {
    sp->p++;
  } else if (ch == '(' && sp->p + 1 < sp->end && sp->p[1] == '(') {   /* (( )), for (( )) */
    sh_arith_cmd(sp);
  } else if (ch == ')' || !sh_fundef(sp)) {
    sh_end(sp, false);
    sp->p++;
  }
}

static void sh_op(struct sh *sp)
{
  const char *p = sp->p;
  char ch = *p, nx = p + 1 < sp->end ? p[1] : '\0';

  if (ch == '(' || ch == ')') {
    sh_paren(sp, ch);
  } else if (ch == '|') {
    sh_end(sp, nx != '|');
    sp->p += nx == '|' || nx == '&' ? 2 : 1;
  } else if (ch == '\n') {
    sp->p++;
    sh_heredocs(sp);
    sh_end(sp, false);
  } else if (ch == ';' && (nx == ';' || nx == '&')) {   /* ;; ;& ;;& in case */
    sh_end(sp, false);
    sp->p += 2 + (nx == ';' && p + 2 < sp->end && p[2] == '&');
    sp->case_pat = sp->in_case > 0;
  } else {
    sh_end(sp, false);   /* ; & && */
    sp->p += ch == '&' && nx == '&' ? 2 : 1;
  }
}

static void sh_run(struct sh *sp)
{
  while (!sp->bad) {
    sh_blanks(sp);
    if (sp->p >= sp->end)
      break;
    char ch = *sp->p;
    char nx = sp->p + 1 < sp->end ? sp->p[1] : '\0';
    if (ch == '#') {
      const char *nl = memchr(sp->p, '\n', (size_t)(sp->end - sp->p));
      sp->p = nl ? nl : sp->end;
    } else if (sh_is_redir(sp)) {
      sh_redir(sp);
    } else if (strchr(";|()\n", ch) || ch == '&') {
      sh_op(sp);
    } else if ((ch == '<' || ch == '>') && nx == '(') {
      sh_procsub(sp);
    } else {
      sh_word(sp);
    }
  }
  sp->case_pat = false;
  sh_end(sp, false);
}

/* ---- fork bombs ---------------------------------------------------------------- */

static bool fb_namech(char ch)
{
  return ch && !isspace((unsigned char)ch) && !strchr(";|&(){}<>\"'`$\\", ch);
}

/* The function whose body opens at s[i] ('{'): "NAME() {" or
 * "function NAME {". */
static bool fb_header(const char *s, size_t i, size_t *ns, size_t *nl)
{
  size_t j = i, e;
  bool parens;

  while (j > 0 && isspace((unsigned char)s[j - 1]))
    j--;
  parens = j > 0 && s[j - 1] == ')';
  if (parens) {
    for (j--; j > 0 && isblank((unsigned char)s[j - 1]); j--)
      ;
    if (j == 0 || s[j - 1] != '(')
      return false;
    for (j--; j > 0 && isblank((unsigned char)s[j - 1]); j--)
      ;
  }
  for (e = j; j > 0 && fb_namech(s[j - 1]); j--)
    ;
  if (j == e)
    return false;
  *ns = j;
  *nl = e - j;
  if (parens)
    return true;
  while (j > 0 && isblank((unsigned char)s[j - 1]))
    j--;
  return j >= 8 && strncmp(s + j - 8, "function", 8) == 0;
}

static size_t fb_body_end(const char *s, size_t i, size_t n)
{
  int depth = 0;

  for (size_t k = i; k < n; k++) {
    if (s[k] == '{')
      depth++;
    else if (s[k] == '}' && --depth == 0)
      return k;
  }
  return n;
}

/* Whether the body calls the function and pipes or backgrounds. */
static bool fb_selfcall(const char *name, size_t nl, const char *body, size_t bl)
{
  if (!memchr(body, '|', bl) && !memchr(body, '&', bl))
    return false;
  for (size_t k = 0; k + nl <= bl; k++) {
    if (memcmp(body + k, name, nl) != 0)
      continue;
    if ((k == 0 || !fb_namech(body[k - 1])) && (k + nl == bl || !fb_namech(body[k + nl])))
      return true;
  }
  return false;
}

/* 1: a function that calls itself in a pipe or the background (`:(){ :|:& };:`),
 * -1: too many functions to check, 0: none. */
static int fb_scan(const char *s, size_t n)
{
  int funcs = 0;

  for (size_t i = 0; i < n; i++) {
    size_t ns, nl, e;
    if (s[i] != '{' || !fb_header(s, i, &ns, &nl))
      continue;
    if (++funcs > POLICY_MAX_FUNCS)
      return -1;
    e = fb_body_end(s, i, n);
    if (fb_selfcall(s + ns, nl, s + i + 1, e - i - 1))
      return 1;
  }
  return 0;
}

/* ---- scripts ----------------------------------------------------------------------- */

static bool sh_alloc(struct sh *sp, size_t n)
{
  /* Every word takes at least one byte of the script, and its text and NUL
   * at most two bytes per byte. */
  sp->cap = 2 * n + 2;
  sp->maxw = (int)n + 2;
  sp->arena = malloc(sp->cap);
  sp->w = malloc((size_t)sp->maxw * sizeof *sp->w);
  sp->wf = malloc((size_t)sp->maxw);
  return sp->arena && sp->w && sp->wf;
}

static void sh_free(struct sh *sp)
{
  free(sp->arena);
  free(sp->w);
  free(sp->wf);
}

static bool script_precheck(const char *s, size_t n, int depth, struct policy_verdict *v)
{
  int bomb;

  if (depth > POLICY_MAX_DEPTH) {
    v_raise(v, RISK_BLOCKED, "script is too deeply nested to check");
    return false;
  }
  if (n > POLICY_MAX_SCRIPT) {
    v_raise(v, RISK_BLOCKED, "script is too long to check");
    return false;
  }
  bomb = fb_scan(s, n);
  if (bomb > 0)
    v_raise(v, RISK_BLOCKED, "fork bomb: a shell function calls itself in a pipe or the "
            "background");
  else if (bomb < 0)
    v_raise(v, RISK_BLOCKED, "script defines too many functions to check");
  return bomb == 0;
}

/* Judges a shell script; *dl (may be NULL) tells whether it prints
 * something it downloaded. */
static void script_judge(const char *s, size_t n, int depth, struct policy_verdict *v,
                         bool *dl)
{
  struct sh sp;

  if (dl)
    *dl = false;
  if (!script_precheck(s, n, depth, v))
    return;
  memset(&sp, 0, sizeof sp);
  sp.p = s;
  sp.end = s + n;
  sp.depth = depth;
  sp.v = v;
  if (!sh_alloc(&sp, n)) {
    v_raise(v, RISK_BLOCKED, "out of memory while checking a script");
  } else {
    sh_run(&sp);
    if (sp.bad)
      v_raise(v, RISK_WRITE, "shell script could not be fully parsed");
    v_raise(v, RISK_READ_ONLY, "shell script runs no commands");
    if (dl)
      *dl = sp.dl;
  }
  sh_free(&sp);
}

/* ---- entry ------------------------------------------------------------------------- */

void policy_check_argv(const char *const *argv, struct policy_verdict *out)
{
  struct cmd c = {argv, NULL, 0, 0};

  if (!out)
    return;
  v_init(out);
  while (argv && argv[c.argc] && c.argc < 1 << 30)
    c.argc++;
  judge_cmd(&c, out);
}

/* ---- write scope ------------------------------------------------------- */

static void scope_add(const char *dir, size_t n)
{
  struct policy_scope *o = tl_scope->out;

  if (n == 0 || n >= sizeof o->dirs[0])
    return;
  for (size_t i = 0; i < o->n; i++)
    if (strlen(o->dirs[i]) == n && strncmp(o->dirs[i], dir, n) == 0)
      return;
  if (o->n >= (size_t)POLICY_SCOPE_MAX) {
    o->overflow = 1;
    return;
  }
  memcpy(o->dirs[o->n], dir, n);
  o->dirs[o->n++][n] = '\0';
}

/* A written (normalised, absolute) path: the directory that holds it is
 * where the write happens, the only way to create, replace or remove it. */
static void scope_note_write(const char *abs)
{
  const char *slash = strrchr(abs, '/');

  if (slash && slash != abs)
    scope_add(abs, (size_t)(slash - abs));
}

/* A directory a command works in: `git -C dir`, `make -C dir`. */
static void scope_note_dir(const char *d)
{
  char p[POLICY_PATH];
  bool dyn;

  if (path_norm(d, p, &dyn) == P_ABS && !dyn && !streq(p, "/") && !path_under_any(p, SYS_DIRS))
    scope_add(p, strlen(p));
}

static void scope_note_cmd(const struct cmd *c, const char *name)
{
  static const char NET_PROGS[] = "curl wget ssh scp sftp rsync";
  static const char NET_GIT[] = "clone fetch pull push ls-remote submodule";
  bool git = streq(name, "git"), make = streq(name, "make") || streq(name, "gmake");
  bool sub = false;

  if (in_words(NET_PROGS, name))
    tl_scope->out->network = 1;
  for (int i = 1; i < c->argc && (git || make); i++) {
    const char *a = c->argv[i];
    if (streq(a, "-C") && i + 1 < c->argc)
      scope_note_dir(c->argv[++i]);
    else if (make && starts(a, "--directory="))
      scope_note_dir(a + 12);
    else if (git && !sub && a[0] != '-') {
      sub = true;          /* the first word that is not an option */
      if (in_words(NET_GIT, a))
        tl_scope->out->network = 1;
    }
  }
}

void policy_write_scope(const char *const *argv, struct policy_scope *out)
{
  struct scope_collect col = {out};
  struct policy_verdict v;

  memset(out, 0, sizeof *out);
  tl_scope = &col;
  policy_check_argv(argv, &v);
  tl_scope = NULL;
}
