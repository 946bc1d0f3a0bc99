/* engine/config.h — SKYNET configuration (SPEC §3).
 *
 * Sources, later ones winning: built-in defaults, the YAML file (--config,
 * else $SKYNET_CONFIG, else ./skynet.yaml if present), environment variables.
 * Unknown keys and wrong types are errors naming the key.  A loaded cfg is
 * read-only and may be shared by every thread; cfg_release() when no thread
 * uses it any more. */
#ifndef SKYNET_CONFIG_H
#define SKYNET_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "log.h"

struct cfg_kv {
  char *key;
  char *value;
};

/* One named execution provider instance under providers: */
struct cfg_provider {
  char *name;             /* "local", "buildbox", "jail" */
  char *type;             /* local, sandbox, ssh, docker, gateway, mock */
  struct cfg_kv *opts;    /* every other key as text: host, port, user, ... */
  size_t n_opts;
};

struct cfg {
  char *source;           /* file loaded, or "defaults" */
  char *home;             /* SKYNET_HOME, created if missing */

  char *telegram_token;   /* secret; NULL → console channel */
  char *telegram_api_base;
  int64_t *allowed_users;
  size_t n_allowed_users;
  int64_t *admins;
  size_t n_admins;
  int telegram_poll_timeout_s;      /* getUpdates long poll, default 50 */
  int telegram_rate_global_per_s;   /* messages per second overall, 30 */
  int telegram_rate_chat_per_s;     /* per private chat, 1 */
  int telegram_rate_group_per_min;  /* per group chat, 20 */
  int telegram_tls_resume;          /* keep the TLS session across restarts
                                     * (HOME/telegram.tls), default on */

  char *database_url;     /* sqlite://PATH or postgresql://... (secret) */

  char *llm_provider;     /* gemini, openai, offline */
  char *llm_model;        /* NULL → backend default */
  char *gemini_api_key;   /* secret */
  char *gemini_base_url;
  char *openai_api_key;   /* secret */
  char *openai_base_url;
  int llm_timeout_s;      /* one model request, default 60 */
  int llm_max_retries;    /* on 429/5xx/network errors, default 3 */
  int llm_daily_token_budget;  /* tokens per UTC day, 0 = no limit */
  int llm_history_tokens; /* chat history sent to the model, default 1500 */

  char *http_listen;      /* NULL → off */
  char **api_keys;        /* secrets */
  size_t n_api_keys;

  int workers;            /* step-running threads, default 2 */
  enum log_level log_level;
  int log_json;           /* 1 json, 0 text, -1 auto (text on a terminal) */

  char *persona;          /* persona name or path, default "skynet" */

  /* timeouts and bounds */
  int job_timeout_s;      /* whole job, default 3600 */
  int step_timeout_s;     /* default per step when a plan gives none, 300 */
  int kill_grace_ms;      /* TERM → KILL, default 2000 */
  int shutdown_grace_s;   /* SIGTERM grace, default 10 */
  size_t output_max;      /* bytes of output tail kept per step, 65536 */
  size_t archive_max_bytes; /* archive.max_bytes: largest artifact, 100 MiB */

  /* the job queue (queue.*) */
  int lease_ms;           /* a claimed job's and a worker's lease, 30000 */
  int max_attempts;       /* runs of a job before it fails for good, 3 */
  int backoff_ms;         /* first retry delay, doubled per attempt, 1000 */

  char *default_provider; /* providers.default, "local" */
  int isolate_write;      /* providers.isolate_write: WRITE steps bound for the
                           * default provider run on a sandbox instance when
                           * one is configured and up; default true */
  struct cfg_provider *providers;   /* always holds at least "local" */
  size_t n_providers;
};

/* Loads the configuration.  path may be NULL (then $SKYNET_CONFIG, then
 * ./skynet.yaml, then defaults).  On failure returns ERR_CONFIG (or ERR_IO for
 * an unreadable file) and writes a one-line message naming the key or file
 * and why into errbuf.  On success every secret is registered with
 * log_add_secret(). */
enum err cfg_load(struct cfg *c, const char *path, char *errbuf, size_t errlen);
/* Frees what c holds (not c itself).  NULL-safe. */
void cfg_release(struct cfg *c);

const struct cfg_provider *cfg_provider_find(const struct cfg *c, const char *name);
/* Option value of a provider instance, or NULL. */
const char *cfg_provider_opt(const struct cfg_provider *p, const char *key);

int cfg_is_allowed(const struct cfg *c, int64_t user_id);
int cfg_is_admin(const struct cfg *c, int64_t user_id);

/* The database path of a sqlite:// URL (malloc'd), or NULL if not sqlite. */
char *cfg_sqlite_path(const char *url);

#endif
