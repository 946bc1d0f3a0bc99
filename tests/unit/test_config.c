/* tests/unit/test_config.c — cfg_load: defaults, the file, env overrides and
 * every error a person is likely to make.
 *
 * Each test works in its own mkdtemp() folder (also its working directory,
 * so no ./skynet.yaml leaks in) and starts by clearing every SPEC variable,
 * so tests neither see the caller's environment nor each other's. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/config.h"
#include "engine/log.h"
#include "tests/harness.h"

static const char *const spec_env[] = {
  "SKYNET_CONFIG", "TELEGRAM_BOT_TOKEN", "SKYNET_TELEGRAM_API",
  "SKYNET_ALLOWED_USERS", "SKYNET_ADMINS", "SKYNET_DATABASE_URL",
  "SKYNET_HOME", "SKYNET_LLM", "GEMINI_API_KEY", "GEMINI_BASE_URL",
  "OPENAI_API_KEY", "OPENAI_BASE_URL", "SKYNET_LLM_MODEL",
  "SKYNET_HTTP_LISTEN", "SKYNET_API_KEYS", "SKYNET_WORKERS", "SKYNET_LOG",
  "XDG_DATA_HOME",
};

static char tmpdir[256];
static char origin[4096];
static char errbuf[512];

/* A fresh folder as working directory, SKYNET_HOME inside it, clean env. */
static int setup(void)
{
  char home[300];

  for (size_t i = 0; i < sizeof(spec_env) / sizeof(*spec_env); i++)
    unsetenv(spec_env[i]);
  log_clear_secrets();
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/skynet-test-config-XXXXXX");
  if (!mkdtemp(tmpdir) || chdir(tmpdir))
    return -1;
  snprintf(home, sizeof(home), "%s/home", tmpdir);
  setenv("SKYNET_HOME", home, 1);
  errbuf[0] = '\0';
  return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void teardown(void)
{
  if (chdir(origin) == 0 && tmpdir[0])
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  tmpdir[0] = '\0';
}

/* Writes text to name inside the test folder; returns the full path. */
static const char *write_file(const char *name, const char *text)
{
  static char path[512];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
  f = fopen(path, "w");
  if (!f)
    return NULL;
  fputs(text, f);
  fclose(f);
  return path;
}

/* Loads text as a config file expecting failure; errbuf holds the message. */
static enum err load_text(const char *text)
{
  struct cfg c;
  const char *path = write_file("c.yaml", text);
  enum err e;

  if (!path)
    return ERR_IO;
  e = cfg_load(&c, path, errbuf, sizeof(errbuf));
  cfg_release(&c);
  return e;
}

TEST(defaults)
{
  struct cfg c;
  char want[600];
  struct stat st;

  ASSERT_EQ(setup(), 0);
  unsetenv("SKYNET_HOME");
  setenv("XDG_DATA_HOME", tmpdir, 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.source, "defaults");
  snprintf(want, sizeof(want), "%s/skynet", tmpdir);
  ASSERT_STREQ(c.home, want);
  ASSERT_EQ(stat(want, &st), 0);
  ASSERT(S_ISDIR(st.st_mode));
  ASSERT_EQ(st.st_mode & 0777, 0700);
  snprintf(want, sizeof(want), "sqlite://%s/skynet/skynet.db", tmpdir);
  ASSERT_STREQ(c.database_url, want);
  ASSERT(c.telegram_token == NULL);
  ASSERT_STREQ(c.telegram_api_base, "https://api.telegram.org");
  ASSERT_STREQ(c.llm_provider, "offline");
  ASSERT(c.llm_model == NULL);
  ASSERT_STREQ(c.gemini_base_url, "https://generativelanguage.googleapis.com");
  ASSERT(c.http_listen == NULL);
  ASSERT_EQ(c.n_api_keys, 0);
  ASSERT_EQ(c.n_allowed_users, 0);
  ASSERT_EQ(c.workers, 2);
  ASSERT_EQ(c.log_level, LOGL_INFO);
  ASSERT_EQ(c.log_json, -1);
  ASSERT_STREQ(c.persona, "skynet");
  ASSERT_EQ(c.job_timeout_s, 3600);
  ASSERT_EQ(c.step_timeout_s, 300);
  ASSERT_EQ(c.kill_grace_ms, 2000);
  ASSERT_EQ(c.shutdown_grace_s, 10);
  ASSERT_EQ(c.output_max, 65536);
  ASSERT_STREQ(c.default_provider, "local");
  ASSERT_EQ(c.n_providers, 1);
  ASSERT_STREQ(c.providers[0].name, "local");
  ASSERT_STREQ(c.providers[0].type, "local");
  cfg_release(&c);
  teardown();
}

static const char full_yaml[] =
    "# every key\n"
    "home: HOME_DIR\n"
    "telegram:\n"
    "  token: \"123456:ABCdefGHIjkl\"\n"
    "  api_base: http://127.0.0.1:8081/\n"
    "  allowed_users: [111, 222]\n"
    "  admins:\n"
    "    - 111\n"
    "database:\n"
    "  url: postgresql://skynet:pgs3cret@db.example/skynet\n"
    "llm:\n"
    "  provider: openai\n"
    "  model: llama3\n"
    "  gemini_api_key: gem-key-123\n"
    "  gemini_base_url: https://gem.example\n"
    "  openai_api_key: sk-openai-456\n"
    "  openai_base_url: http://127.0.0.1:11434/v1\n"
    "http:\n"
    "  listen: 127.0.0.1:8765\n"
    "  api_keys: [key-one-1, key-two-2]\n"
    "workers: 0\n"
    "log: {level: debug, format: json}\n"
    "persona: /etc/skynet/persona\n"
    "timeouts:\n"
    "  job_s: 60\n"
    "  step_s: 5\n"
    "  kill_grace_ms: 100\n"
    "  shutdown_grace_s: 3\n"
    "output_max: 1024\n"
    "providers:\n"
    "  default: buildbox\n"
    "  buildbox: {type: ssh, host: 10.0.0.5, port: 22, user: ops,\n"
    "             identity_file: /etc/skynet/id_ed25519}\n"
    "  jail: {type: sandbox}\n";

/* full_yaml with HOME_DIR pointing into the test folder. */
static const char *write_full(void)
{
  char text[sizeof(full_yaml) + 512], *at;
  size_t head;

  at = strstr(full_yaml, "HOME_DIR");
  head = (size_t)(at - full_yaml);
  snprintf(text, sizeof(text), "%.*s%s/fhome%s", (int)head, full_yaml, tmpdir,
           at + strlen("HOME_DIR"));
  return write_file("full.yaml", text);
}

TEST(full_file)
{
  struct cfg c;
  const struct cfg_provider *p;
  const char *path;
  char want[400];

  ASSERT_EQ(setup(), 0);
  unsetenv("SKYNET_HOME");
  ASSERT((path = write_full()));
  ASSERT_EQ(cfg_load(&c, path, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.source, path);
  snprintf(want, sizeof(want), "%s/fhome", tmpdir);
  ASSERT_STREQ(c.home, want);
  ASSERT_STREQ(c.telegram_token, "123456:ABCdefGHIjkl");
  ASSERT_STREQ(c.telegram_api_base, "http://127.0.0.1:8081");
  ASSERT_EQ(c.n_allowed_users, 2);
  ASSERT_EQ(c.allowed_users[0], 111);
  ASSERT_EQ(c.allowed_users[1], 222);
  ASSERT_EQ(c.n_admins, 1);
  ASSERT_STREQ(c.database_url, "postgresql://skynet:pgs3cret@db.example/skynet");
  ASSERT_STREQ(c.llm_provider, "openai");
  ASSERT_STREQ(c.llm_model, "llama3");
  ASSERT_STREQ(c.gemini_api_key, "gem-key-123");
  ASSERT_STREQ(c.gemini_base_url, "https://gem.example");
  ASSERT_STREQ(c.openai_api_key, "sk-openai-456");
  ASSERT_STREQ(c.openai_base_url, "http://127.0.0.1:11434/v1");
  ASSERT_STREQ(c.http_listen, "127.0.0.1:8765");
  ASSERT_EQ(c.n_api_keys, 2);
  ASSERT_STREQ(c.api_keys[1], "key-two-2");
  ASSERT_EQ(c.workers, 0);
  ASSERT_EQ(c.log_level, LOGL_DEBUG);
  ASSERT_EQ(c.log_json, 1);
  ASSERT_STREQ(c.persona, "/etc/skynet/persona");
  ASSERT_EQ(c.job_timeout_s, 60);
  ASSERT_EQ(c.step_timeout_s, 5);
  ASSERT_EQ(c.kill_grace_ms, 100);
  ASSERT_EQ(c.shutdown_grace_s, 3);
  ASSERT_EQ(c.output_max, 1024);
  ASSERT_STREQ(c.default_provider, "buildbox");
  ASSERT_EQ(c.n_providers, 3);
  ASSERT((p = cfg_provider_find(&c, "buildbox")));
  ASSERT_STREQ(p->type, "ssh");
  ASSERT_STREQ(cfg_provider_opt(p, "host"), "10.0.0.5");
  ASSERT_STREQ(cfg_provider_opt(p, "port"), "22");
  ASSERT_STREQ(cfg_provider_opt(p, "user"), "ops");
  ASSERT_STREQ(cfg_provider_opt(p, "identity_file"), "/etc/skynet/id_ed25519");
  ASSERT(cfg_provider_opt(p, "type") == NULL);
  ASSERT(cfg_provider_opt(p, "nope") == NULL);
  ASSERT_STREQ(cfg_provider_find(&c, "jail")->type, "sandbox");
  ASSERT_STREQ(cfg_provider_find(&c, "local")->type, "local");
  ASSERT(cfg_provider_find(&c, "nope") == NULL);
  cfg_release(&c);
  teardown();
}

TEST(env_overrides_file)
{
  struct cfg c;
  const char *path;

  ASSERT_EQ(setup(), 0);
  ASSERT((path = write_full()));
  setenv("TELEGRAM_BOT_TOKEN", "999:envtoken", 1);
  setenv("SKYNET_TELEGRAM_API", "http://127.0.0.1:9/", 1);
  setenv("SKYNET_ALLOWED_USERS", " 5, 6 ,7", 1);
  setenv("SKYNET_ADMINS", "7", 1);
  setenv("SKYNET_DATABASE_URL", "sqlite:///var/lib/x.db", 1);
  setenv("SKYNET_LLM", "gemini", 1);
  setenv("SKYNET_LLM_MODEL", "gemini-2.0", 1);
  setenv("GEMINI_API_KEY", "env-gem-key", 1);
  setenv("SKYNET_HTTP_LISTEN", "0.0.0.0:1", 1);
  setenv("SKYNET_API_KEYS", "a-key-1,b-key-2,c-key-3", 1);
  setenv("SKYNET_WORKERS", "7", 1);
  setenv("SKYNET_LOG", "warn", 1);
  setenv("OPENAI_API_KEY", "", 1);     /* empty counts as unset */
  ASSERT_EQ(cfg_load(&c, path, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_CONTAINS(c.home, "/home");    /* SKYNET_HOME beats the file */
  ASSERT_STREQ(c.telegram_token, "999:envtoken");
  ASSERT_STREQ(c.telegram_api_base, "http://127.0.0.1:9");
  ASSERT_EQ(c.n_allowed_users, 3);
  ASSERT_EQ(c.allowed_users[0], 5);
  ASSERT_EQ(c.allowed_users[2], 7);
  ASSERT_EQ(c.n_admins, 1);
  ASSERT_EQ(c.admins[0], 7);
  ASSERT_STREQ(c.database_url, "sqlite:///var/lib/x.db");
  ASSERT_STREQ(c.llm_provider, "gemini");
  ASSERT_STREQ(c.llm_model, "gemini-2.0");
  ASSERT_STREQ(c.gemini_api_key, "env-gem-key");
  ASSERT_STREQ(c.openai_api_key, "sk-openai-456");
  ASSERT_STREQ(c.http_listen, "0.0.0.0:1");
  ASSERT_EQ(c.n_api_keys, 3);
  ASSERT_STREQ(c.api_keys[2], "c-key-3");
  ASSERT_EQ(c.workers, 7);
  ASSERT_EQ(c.log_level, LOGL_WARN);
  ASSERT_EQ(c.log_json, 1);
  cfg_release(&c);
  teardown();
}

TEST(env_home_moves_default_database)
{
  struct cfg c;
  char want[400];

  ASSERT_EQ(setup(), 0);
  ASSERT((write_file("c.yaml", "workers: 1\n")));
  ASSERT_EQ(cfg_load(&c, "c.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  snprintf(want, sizeof(want), "sqlite://%s/home/skynet.db", tmpdir);
  ASSERT_STREQ(c.database_url, want);
  cfg_release(&c);
  teardown();
}

TEST(env_log_format)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  setenv("SKYNET_LOG", "debug,text", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_EQ(c.log_level, LOGL_DEBUG);
  ASSERT_EQ(c.log_json, 0);
  cfg_release(&c);
  setenv("SKYNET_LOG", "loud", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "'SKYNET_LOG'");
  teardown();
}

TEST(llm_auto_detect)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.llm_provider, "openai");
  cfg_release(&c);
  setenv("GEMINI_API_KEY", "gemini-key-x", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.llm_provider, "gemini");
  cfg_release(&c);
  setenv("SKYNET_LLM", "offline", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.llm_provider, "offline");
  cfg_release(&c);
  setenv("SKYNET_LLM", "claude", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "'SKYNET_LLM'");
  ASSERT_CONTAINS(errbuf, "'claude'");
  ASSERT_EQ(load_text("llm: {provider: claude}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'llm.provider' must be one of");
  teardown();
}

TEST(unknown_key)
{
  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(load_text("telegram:\n  tokn: x\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "unknown key 'telegram.tokn' in '");
  ASSERT_CONTAINS(errbuf, "c.yaml'");
  ASSERT_CONTAINS(errbuf, "line 2");
  ASSERT_EQ(load_text("wrokers: 2\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "unknown key 'wrokers'");
  /* a dotted key must not sneak past the schema */
  ASSERT_EQ(load_text("telegram.token: x\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "unknown key 'telegram.token'");
  ASSERT_EQ(load_text("workers: 1\nworkers: 2\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "duplicate key 'workers'");
  teardown();
}

TEST(wrong_types)
{
  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(load_text("workers: abc\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'workers' must be a non-negative integer, got 'abc'");
  ASSERT_EQ(load_text("workers: -1\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'workers'");
  ASSERT_EQ(load_text("workers: 99999999999999999999999\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'workers' is out of range");
  ASSERT_EQ(load_text("timeouts: {job_s: 0}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'timeouts.job_s'");
  ASSERT_EQ(load_text("timeouts: {step_s: 1.5}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'timeouts.step_s' must be a positive integer");
  ASSERT_EQ(load_text("output_max: 0\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'output_max'");
  ASSERT_EQ(load_text("telegram: yes\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'telegram' must be a mapping, got 'yes'");
  ASSERT_EQ(load_text("telegram: {token: [a, b]}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'telegram.token' must be a single value, got a list");
  ASSERT_EQ(load_text("telegram: {allowed_users: [1, bob]}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'telegram.allowed_users'");
  ASSERT_CONTAINS(errbuf, "'bob'");
  ASSERT_EQ(load_text("telegram: {allowed_users: 12}\n"), ERR_CONFIG);
  ASSERT_EQ(load_text("log: {format: xml}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'log.format'");
  ASSERT_EQ(load_text("log: {level: loud}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'log.level'");
  ASSERT_EQ(load_text("http: {api_keys: [ok-key-1, {a: b}]}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'http.api_keys'");
  ASSERT_EQ(load_text("- just\n- a list\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "must hold a mapping");
  teardown();
}

TEST(env_wrong_types)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  setenv("SKYNET_WORKERS", "many", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "'SKYNET_WORKERS' must be a non-negative integer, got 'many'");
  unsetenv("SKYNET_WORKERS");
  setenv("SKYNET_ALLOWED_USERS", "12,abc", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "SKYNET_ALLOWED_USERS");
  ASSERT_CONTAINS(errbuf, "'abc'");
  unsetenv("SKYNET_ALLOWED_USERS");
  setenv("SKYNET_ADMINS", "99999999999999999999", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "SKYNET_ADMINS");
  teardown();
}

TEST(bad_yaml_line)
{
  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(load_text("workers: 1\npersona: x\ntelegram:\n  token: \"abc\n"),
            ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "bad YAML in '");
  ASSERT_CONTAINS(errbuf, "line 5");
  ASSERT_EQ(load_text("workers: 1\n  persona: [x\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "line 2");
  teardown();
}

TEST(missing_file)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(cfg_load(&c, "x.yaml", errbuf, sizeof(errbuf)), ERR_IO);
  ASSERT_STREQ(errbuf, "cannot open 'x.yaml': No such file or directory");
  cfg_release(&c);
  setenv("SKYNET_CONFIG", "/nonexistent/y.yaml", 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_IO);
  ASSERT_CONTAINS(errbuf, "'/nonexistent/y.yaml'");
  teardown();
}

TEST(file_resolution)
{
  struct cfg c;
  const char *path;

  ASSERT_EQ(setup(), 0);
  ASSERT(write_file("skynet.yaml", "persona: from-cwd\n"));
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.persona, "from-cwd");
  ASSERT_STREQ(c.source, "skynet.yaml");
  cfg_release(&c);
  ASSERT((path = write_file("env.yaml", "persona: from-env\n")));
  setenv("SKYNET_CONFIG", path, 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.persona, "from-env");
  cfg_release(&c);
  ASSERT(write_file("arg.yaml", "persona: from-arg\n"));
  ASSERT_EQ(cfg_load(&c, "arg.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.persona, "from-arg");
  cfg_release(&c);
  ASSERT(write_file("empty.yaml", ""));
  ASSERT_EQ(cfg_load(&c, "empty.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_STREQ(c.persona, "skynet");
  ASSERT_STREQ(c.source, "empty.yaml");
  cfg_release(&c);
  teardown();
}

TEST(providers)
{
  struct cfg c;
  const struct cfg_provider *p;

  ASSERT_EQ(setup(), 0);
  ASSERT(write_file("p.yaml",
                    "providers:\n"
                    "  box-1:\n"
                    "    type: ssh\n"
                    "    host: 10.0.0.5\n"
                    "    port: 2222\n"
                    "    known_hosts:\n"
                    "  local: {type: sandbox}\n"));
  ASSERT_EQ(cfg_load(&c, "p.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_EQ(c.n_providers, 2);   /* the file's "local" is kept as given */
  ASSERT((p = cfg_provider_find(&c, "box-1")));
  ASSERT_STREQ(p->type, "ssh");
  ASSERT_EQ(p->n_opts, 3);
  ASSERT_STREQ(cfg_provider_opt(p, "port"), "2222");
  ASSERT_STREQ(cfg_provider_opt(p, "known_hosts"), "");
  ASSERT_STREQ(cfg_provider_find(&c, "local")->type, "sandbox");
  ASSERT_STREQ(c.default_provider, "local");
  cfg_release(&c);

  ASSERT_EQ(load_text("providers: {box: {host: x}}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "missing key 'providers.box.type'");
  ASSERT_EQ(load_text("providers: {box: {type: vm}}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'providers.box.type' must be one of");
  ASSERT_EQ(load_text("providers: {box: ssh}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'providers.box'");
  ASSERT_EQ(load_text("providers: {box: {type: ssh, opts: {a: 1}}}\n"),
            ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "key 'providers.box.opts'");
  ASSERT_EQ(load_text("providers: {\"bad name\": {type: ssh}}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "not a valid provider name");
  ASSERT_EQ(load_text("providers: {b: {type: ssh, type: mock}}\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "duplicate key 'providers.b.type'");
  teardown();
}

TEST(default_provider_unknown)
{
  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(load_text("providers:\n  default: x\n  jail: {type: sandbox}\n"),
            ERR_CONFIG);
  ASSERT_STREQ(errbuf, "key 'providers.default' names unknown provider 'x'");
  ASSERT_EQ(load_text("providers: {default: jail, jail: {type: sandbox}}\n"),
            ERR_OK);
  teardown();
}

TEST(allowed_and_admins)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  ASSERT(write_file("a.yaml", "telegram:\n"
                              "  allowed_users: [10, 20]\n"
                              "  admins: [30, -100200]\n"));
  ASSERT_EQ(cfg_load(&c, "a.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT(cfg_is_allowed(&c, 10));
  ASSERT(cfg_is_allowed(&c, 20));
  ASSERT(cfg_is_allowed(&c, 30));     /* admins may command too */
  ASSERT(!cfg_is_allowed(&c, 40));
  ASSERT(!cfg_is_admin(&c, 10));
  ASSERT(cfg_is_admin(&c, 30));
  ASSERT(cfg_is_admin(&c, -100200));
  cfg_release(&c);
  setenv("SKYNET_ALLOWED_USERS", "40", 1);
  ASSERT_EQ(cfg_load(&c, "a.yaml", errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT(!cfg_is_allowed(&c, 10));    /* env replaces the file's list */
  ASSERT(cfg_is_allowed(&c, 40));
  cfg_release(&c);
  teardown();
}

TEST(secrets_registered)
{
  struct cfg c;
  char *s;

  ASSERT_EQ(setup(), 0);
  setenv("TELEGRAM_BOT_TOKEN", "777:tokentokentoken", 1);
  setenv("SKYNET_DATABASE_URL", "postgresql://ops:p%40ssw0rd@db:5432/sk", 1);
  setenv("SKYNET_API_KEYS", "apikey-aaaa", 1);
  setenv("OPENAI_API_KEY", "sk-openai-zzz", 1);
  s = log_redact("token 777:tokentokentoken");
  ASSERT_STREQ(s, "token 777:tokentokentoken");   /* not before loading */
  free(s);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  s = log_redact("https://api/bot777:tokentokentoken/getMe key=apikey-aaaa "
                 "sk-openai-zzz pw=p%40ssw0rd p@ssw0rd");
  ASSERT_STREQ(s, "https://api/bot[REDACTED]/getMe key=[REDACTED] [REDACTED] "
                  "pw=[REDACTED] [REDACTED]");
  free(s);
  s = log_redact(c.database_url);
  ASSERT_STREQ(s, "postgresql://ops:[REDACTED]@db:5432/sk");
  free(s);
  cfg_release(&c);
  log_clear_secrets();
  teardown();
}

TEST(home_not_creatable)
{
  struct cfg c;
  char home[400];

  ASSERT_EQ(setup(), 0);
  ASSERT(write_file("file", "x"));
  snprintf(home, sizeof(home), "%s/file/sub", tmpdir);
  setenv("SKYNET_HOME", home, 1);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "'home'");
  ASSERT_CONTAINS(errbuf, home);
  teardown();
}

TEST(hostile_input)
{
  char *deep;
  size_t n = 5000;

  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(load_text("a: &x {b: 1}\nc: *x\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "alias");
  ASSERT_EQ(load_text("persona: &p skynet\n"), ERR_OK);   /* anchors are fine */
  ASSERT_EQ(load_text("persona: !!str skynet\n"), ERR_OK);
  ASSERT_EQ(load_text("workers: 1\n---\nworkers: 2\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "more than one YAML document");
  ASSERT_EQ(load_text("? [a, b]\n: c\n"), ERR_CONFIG);
  ASSERT_EQ(load_text("persona: \"a\\0b\"\n"), ERR_CONFIG);
  ASSERT_EQ(load_text("\xff\xfe garbage\n"), ERR_CONFIG);
  ASSERT_EQ(load_text("output_max: 18446744073709551616\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "out of range");
  deep = malloc(2 * n + 16);
  ASSERT(deep);
  memcpy(deep, "home: ", 6);
  memset(deep + 6, '[', n);
  memset(deep + 6 + n, ']', n);
  deep[6 + 2 * n] = '\0';
  ASSERT_EQ(load_text(deep), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "nested too deep");
  free(deep);
  teardown();
}

TEST(file_too_big)
{
  struct cfg c;
  char path[400];
  FILE *f;

  ASSERT_EQ(setup(), 0);
  snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
  ASSERT((f = fopen(path, "w")));
  for (int i = 0; i < 70000; i++)
    fputs("# padding line\n", f);
  fclose(f);
  ASSERT_EQ(cfg_load(&c, path, errbuf, sizeof(errbuf)), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "too big");
  teardown();
}

TEST(sqlite_path)
{
  char *p;

  p = cfg_sqlite_path("sqlite:///var/lib/skynet/skynet.db");
  ASSERT_STREQ(p, "/var/lib/skynet/skynet.db");
  free(p);
  p = cfg_sqlite_path("sqlite://rel/skynet.db");
  ASSERT_STREQ(p, "rel/skynet.db");
  free(p);
  ASSERT(cfg_sqlite_path("postgresql://u:p@h/db") == NULL);
  ASSERT(cfg_sqlite_path("sqlite://") == NULL);
  ASSERT(cfg_sqlite_path("sqlite:x") == NULL);
  ASSERT(cfg_sqlite_path(NULL) == NULL);
}

/* The shipped example must load as it is. */
TEST(example_file_loads)
{
  struct cfg c;
  char path[4200];

#ifdef SKYNET_SOURCE_DIR
  snprintf(path, sizeof(path), "%s/deploy/skynet.example.yaml",
           SKYNET_SOURCE_DIR);
#else
  snprintf(path, sizeof(path), "%s/deploy/skynet.example.yaml", origin);
#endif
  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(cfg_load(&c, path, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_EQ(c.workers, 2);
  ASSERT_STREQ(c.llm_provider, "offline");
  ASSERT(c.telegram_token == NULL);
  ASSERT_EQ(c.log_json, -1);
  ASSERT_STREQ(c.default_provider, "local");
  cfg_release(&c);
  teardown();
}

/* Telegram's long-poll timeout and sending limits: defaults, a file, bounds. */
TEST(telegram_limits)
{
  struct cfg c;
  const char *path;

  ASSERT_EQ(setup(), 0);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_EQ(c.telegram_poll_timeout_s, 50);
  ASSERT_EQ(c.telegram_rate_global_per_s, 30);
  ASSERT_EQ(c.telegram_rate_chat_per_s, 1);
  ASSERT_EQ(c.telegram_rate_group_per_min, 20);
  ASSERT_EQ(c.telegram_tls_resume, 1);
  cfg_release(&c);
  ASSERT((path = write_file("t.yaml", "telegram:\n  poll_timeout_s: 5\n"
                                      "  rate_global_per_s: 10\n  rate_chat_per_s: 2\n"
                                      "  rate_group_per_min: 12\n  tls_resume: false\n")));
  ASSERT_EQ(cfg_load(&c, path, errbuf, sizeof(errbuf)), ERR_OK);
  ASSERT_EQ(c.telegram_poll_timeout_s, 5);
  ASSERT_EQ(c.telegram_rate_global_per_s, 10);
  ASSERT_EQ(c.telegram_rate_chat_per_s, 2);
  ASSERT_EQ(c.telegram_rate_group_per_min, 12);
  ASSERT_EQ(c.telegram_tls_resume, 0);
  cfg_release(&c);
  ASSERT_EQ(load_text("telegram:\n  tls_resume: maybe\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "telegram.tls_resume");
  ASSERT_CONTAINS(errbuf, "true or false");
  ASSERT_EQ(load_text("telegram:\n  rate_global_per_s: 0\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "telegram.rate_global_per_s");
  ASSERT_EQ(load_text("telegram:\n  poll_timeout_s: 601\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "telegram.poll_timeout_s");
  ASSERT_EQ(load_text("telegram:\n  rate_chat_per_s: fast\n"), ERR_CONFIG);
  ASSERT_CONTAINS(errbuf, "telegram.rate_chat_per_s");
  teardown();
}

TEST(release_is_safe)
{
  struct cfg c;

  ASSERT_EQ(setup(), 0);
  cfg_release(NULL);
  ASSERT_EQ(cfg_load(&c, NULL, errbuf, sizeof(errbuf)), ERR_OK);
  cfg_release(&c);
  cfg_release(&c);
  ASSERT(c.home == NULL);
  teardown();
}

int main(void)
{
  if (!getcwd(origin, sizeof(origin)))
    return 1;
  RUN(defaults);
  RUN(full_file);
  RUN(env_overrides_file);
  RUN(env_home_moves_default_database);
  RUN(env_log_format);
  RUN(llm_auto_detect);
  RUN(unknown_key);
  RUN(wrong_types);
  RUN(env_wrong_types);
  RUN(bad_yaml_line);
  RUN(missing_file);
  RUN(file_resolution);
  RUN(providers);
  RUN(default_provider_unknown);
  RUN(allowed_and_admins);
  RUN(secrets_registered);
  RUN(home_not_creatable);
  RUN(hostile_input);
  RUN(file_too_big);
  RUN(sqlite_path);
  RUN(example_file_loads);
  RUN(telegram_limits);
  RUN(release_is_safe);
  teardown();
  log_clear_secrets();
  return test_summary();
}
