/* bench_telegram — skynet against the fake Bot API server: time from exec to
 * the first getUpdates, idle resident memory while long-polling, and reply
 * latency of /help and /status (update pushed to the fake, which holds the
 * long poll like Telegram → sendMessage received by the fake), throughput
 * of updates handled end to end in batches of 100, and outbox pacing against
 * a fake that enforces Telegram's limits.  Prints figures.
 * The latency part runs twice: plain HTTP, then HTTPS through a TLS relay in
 * front of the fake (tests/faketls.h, a CA made with the openssl CLI and given
 * to skynet in SSL_CERT_FILE), so that start-up, memory and latency are also
 * measured with TLS set up (CA bundle parsed, sessions open) as with Telegram.
 *   bench_telegram [latency|tls|throughput|pacing] */
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include "../e2e/fakebot.h"
#include "../faketls.h"
#include "../e2e/proc.h"
#include "../testutil.h"

/* VmRSS of pid in KB; anon and file get RssAnon and RssFile (shared
 * libraries' touched pages). */
static long rss_kb(pid_t pid, long *anon, long *file)
{
  char path[64], line[256];
  long kb = -1;
  FILE *f;

  *anon = *file = -1;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!(f = fopen(path, "r")))
    return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
    else if (strncmp(line, "RssAnon:", 8) == 0)
      *anon = strtol(line + 8, NULL, 10);
    else if (strncmp(line, "RssFile:", 8) == 0)
      *file = strtol(line + 8, NULL, 10);
  }
  fclose(f);
  return kb;
}

static int cmp(const void *a, const void *b)
{
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* The update for chat as it left the relay's TLS end towards skynet, then
 * the reply to that chat as it came out of it: µs between, or -1. */
static long long relay_span(struct ft_relay *r, int from, long long chat)
{
  char upd[64], reply[64];
  long long t_in = -1;
  int n = __atomic_load_n(&r->log_n, __ATOMIC_SEQ_CST);

  snprintf(upd, sizeof upd, "\"chat\":{\"id\":%lld,", chat);
  snprintf(reply, sizeof reply, "\"chat_id\":%lld,", chat);
  for (int i = from; i < n; i++) {
    if (t_in < 0 && !r->log[i].from_client && strstr(r->log[i].text, upd))
      t_in = r->log[i].us;
    else if (t_in >= 0 && r->log[i].from_client && strstr(r->log[i].text, reply))
      return r->log[i].us - t_in;
  }
  return -1;
}

static void print_lat(const char *what, long long *lat, int got)
{
  qsort(lat, (size_t)got, sizeof lat[0], cmp);
  if (got)
    printf("%s over %d chats: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", what, got,
           lat[got / 2] / 1000.0, lat[got * 99 / 100] / 1000.0, lat[got - 1] / 1000.0);
}

/* Reply latency in µs of cmd over `n` users, each its own chat: at the fake
 * (update pushed → sendMessage received), and, over TLS, also at the
 * relay's TLS end (update written to skynet's connection → the reply read
 * from it), which leaves out the relay's own hops to and from the fake:
 * what a server that speaks TLS itself, as Telegram's, would see. */
static void latency(struct fk *fk, struct ft_relay *relay, const char *cmd, int user0, int n)
{
  long long lat[200], at_tls[200];
  int got = 0, got_tls = 0;
  char what[160];

  for (int i = 0; i < n && i < 200; i++) {
    size_t mark = fk_mark(fk);
    int rmark = relay && relay->log ? __atomic_load_n(&relay->log_n, __ATOMIC_SEQ_CST) : 0;
    char chat[32];
    long long q = fk_us(), span;
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", user0 + i);
    fk_msg(fk, user0 + i, user0 + i, cmd);
    long h = fk_wait(fk, mark, "sendMessage", chat, NULL, 5000);
    if (h >= 0)
      lat[got++] = fk->recs[h].at_us - q;
    if (h >= 0 && relay && relay->log && (span = relay_span(relay, rmark, user0 + i)) >= 0)
      at_tls[got_tls++] = span;
    usleep(40 * 1000);   /* stay under 30 messages/s: no limit holds a reply back */
  }
  snprintf(what, sizeof what, "%s reply latency", cmd);
  print_lat(what, lat, got);
  snprintf(what, sizeof what, "%s reply latency at the TLS end (without the relay's hops)", cmd);
  if (relay && relay->log)
    print_lat(what, at_tls, got_tls);
}

struct run {
  char dir[512], home[600], env_home[700], env_api[128], env_users[8192];
  char env_ca[700];
  int tls_port;                      /* set: https://localhost:<tls_port> */
  struct proc p;
};

/* Starts skynet on r's home (kept from a previous run). */
static int run_restart(struct run *r, struct fk *fk, int user0, int n)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  size_t off;

  snprintf(r->home, sizeof r->home, "%s/home", r->dir);
  snprintf(r->env_home, sizeof r->env_home, "SKYNET_HOME=%s", r->home);
  if (r->tls_port)
    snprintf(r->env_api, sizeof r->env_api, "SKYNET_TELEGRAM_API=https://localhost:%d",
             r->tls_port);
  else
    snprintf(r->env_api, sizeof r->env_api, "SKYNET_TELEGRAM_API=http://127.0.0.1:%d",
             fk->port);
  off = (size_t)snprintf(r->env_users, sizeof r->env_users, "SKYNET_ALLOWED_USERS=");
  for (int i = 1; i <= n && off < sizeof r->env_users - 16; i++)
    off += (size_t)snprintf(r->env_users + off, sizeof r->env_users - off, "%s%d", i > 1 ? "," : "",
                            user0 + i);
  char *env[] = {r->env_home, r->env_api, r->env_users, "TELEGRAM_BOT_TOKEN=" FK_TOKEN,
                 "SKYNET_CONFIG=", "SKYNET_LOG=error", "SKYNET_LLM=offline",
                 "SKYNET_DATABASE_URL=", NULL, NULL, NULL};
  char **e = env + 8;
  if (r->tls_port)
    *e++ = r->env_ca;
  if (getenv("BENCH_SKYNET_ENV"))   /* one more VAR=value for skynet, for experiments */
    *e++ = getenv("BENCH_SKYNET_ENV");
  return proc_start(&r->p, argv, env);
}

/* Starts skynet on a fresh home against fk, allowing users user0+1 .. user0+n. */
static int run_start(struct run *r, struct fk *fk, int user0, int n)
{
  tu_tmpdir(r->dir, sizeof r->dir);
  return run_restart(r, fk, user0, n);
}

/* Resident memory by kind from /proc/pid/smaps_rollup (KB). */
static void print_smaps(pid_t pid)
{
  char path[64], line[256];
  FILE *f;

  snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
  if (!(f = fopen(path, "r")))
    return;
  printf("  smaps_rollup:");
  while (fgets(line, sizeof line, f)) {
    long kb;
    char name[64];
    if (sscanf(line, "%63[^:]: %ld kB", name, &kb) == 2 &&
        (!strcmp(name, "Rss") || !strcmp(name, "Pss") || !strcmp(name, "Anonymous") ||
         !strcmp(name, "Shared_Clean") || !strcmp(name, "Private_Clean") ||
         !strcmp(name, "Private_Dirty")))
      printf(" %s %ld", name, kb);
  }
  printf(" (KB)\n");
  fclose(f);
  if (getenv("BENCH_SMAPS")) {   /* resident KB per mapping, for looking into it */
    char cmd[200];
    snprintf(cmd, sizeof cmd, "awk '/^[0-9a-f]+-/{m=$1" "$2" "$6} /^Rss:/{r[m]+=$2} END{for (k in r) "
             "if (r[k]) print r[k], k}' /proc/%d/smaps | sort -rn | head -40", (int)pid);
    if (system(cmd) != 0)
      printf("  (smaps not readable)\n");
  }
}

static void run_stop(struct run *r)
{
  kill(r->p.pid, SIGTERM);
  proc_finish(&r->p, 20000);
  proc_release(&r->p);
  tu_rmrf(r->dir);
}

/* The floor under any startup figure: exec of `skynet --version`, which
 * only loads the program and its ~40 shared libraries; best of 5. */
static long long version_floor_ms(void)
{
  char *argv[] = {SKYNET_BIN, "--version", NULL};
  long long best = -1;

  for (int i = 0; i < 5; i++) {
    struct proc p;
    long long t0 = fk_ms();
    if (proc_start(&p, argv, NULL))
      return -1;
    proc_finish(&p, 5000);
    proc_release(&p);
    if (best < 0 || fk_ms() - t0 < best)
      best = fk_ms() - t0;
  }
  return best;
}

/* CPU time all threads of pid have run so far, µs (schedstat). */
static long long cpu_us(pid_t pid)
{
  char path[96];
  long long sum = 0;
  DIR *d;
  struct dirent *de;

  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  if (!(d = opendir(path)))
    return -1;
  while ((de = readdir(d))) {
    char p2[400];
    unsigned long long ns = 0;
    FILE *f;
    if (de->d_name[0] == '.')
      continue;
    snprintf(p2, sizeof p2, "%s/%s/schedstat", path, de->d_name);
    if ((f = fopen(p2, "r"))) {
      if (fscanf(f, "%llu", &ns) == 1)
        sum += (long long)(ns / 1000);
      fclose(f);
    }
  }
  closedir(d);
  return sum;
}

/* Starts skynet on r's home, waits for its first getUpdates and stops it:
 * ms from exec to that request (-1 if it never came), and in *cpu (may be
 * NULL) the CPU time skynet had used when the request was seen, µs. */
static long long start_to_poll(struct run *r, struct fk *f, long long *cpu)
{
  size_t m = fk_mark(f);
  long long t0 = fk_ms(), ms;
  long hit;

  if (run_restart(r, f, 1000, 400))
    return -1;
  if ((hit = fk_wait(f, m, "getUpdates", NULL, NULL, 10000)) < 0) {
    printf("skynet never polled\n");
    run_stop(r);
    return -1;
  }
  if (cpu)
    *cpu = cpu_us(r->p.pid);
  ms = f->recs[hit].at - t0;
  kill(r->p.pid, SIGTERM);
  proc_finish(&r->p, 20000);
  proc_release(&r->p);
  return ms;
}

/* Restarts on the existing database: ten, as one figure is noise on a
 * shared machine.  Over TLS (relay set), skynet resumes the session the
 * last run kept in HOME/telegram.tls, unless full: the file is removed
 * before each start, as on a first start. */
static int restarts(struct run *r, struct fk *f, struct ft_relay *relay, int full)
{
  long long rs[10];
  int nr = 0, resumed0 = relay ? relay->resumed : 0, hs0 = relay ? relay->handshakes : 0;
  char sess[700];

  snprintf(sess, sizeof sess, "%s/telegram.tls", r->home);
  for (int i = 0; i < 10; i++) {
    if (full)
      unlink(sess);
    if ((rs[nr++] = start_to_poll(r, f, NULL)) < 0)
      return 1;
  }
  qsort(rs, (size_t)nr, sizeof rs[0], cmp);
  printf("restart (database exists) → first getUpdates over %d runs: min %lld ms, "
         "median %lld ms, max %lld ms", nr, rs[0], rs[nr / 2], rs[nr - 1]);
  if (relay)
    printf("  (%s; %d of the %d TLS handshakes, the poller's and the sender's, resumed)",
           full ? "no kept TLS session: the poller's a full handshake, as on a first start"
                : "TLS session resumed from HOME/telegram.tls",
           relay->resumed - resumed0, relay->handshakes - hs0);
  printf("\n");
  return 0;
}

/* First starts: ten, each on a new home (no database, no kept TLS
 * session), as one figure is noise on a shared machine. */
static int first_starts(struct run *r, struct fk *f)
{
  long long fs[10], cpu[10];
  int n = 0;

  for (int i = 0; i < 10; i++) {
    tu_rmrf(r->home);
    if ((fs[n] = start_to_poll(r, f, &cpu[n])) < 0)
      return 1;
    n++;
  }
  qsort(fs, (size_t)n, sizeof fs[0], cmp);
  qsort(cpu, (size_t)n, sizeof cpu[0], cmp);
  printf("first start (new home: no database, no kept TLS session) → first getUpdates over %d "
         "runs: min %lld ms, median %lld ms, max %lld ms; skynet's CPU time when the poll was seen "
         "(all threads) median %.1f ms\n", n, fs[0], fs[n / 2], fs[n - 1], cpu[n / 2] / 1000.0);
  return 0;
}

/* Startup, idle memory and reply latency; over TLS when tls is set. */
static int bench_latency(int tls)
{
  static struct fk fks[2];
  static struct ft_relay relay;
  struct fk *f = &fks[tls];
  struct run r = {0};
  char certs[512];
  long long t0;
  long hit, anon, file;

  if (fk_start(f))
    return 1;
  printf("== %s\n", tls ? "HTTPS (TLS relay in front of the fake; SSL_CERT_FILE = the system "
                         "CA bundle plus the test CA)"
                         : "plain HTTP");
  if (tls) {
    tu_tmpdir(certs, sizeof certs);
    if (ft_make_certs(certs) || ft_start(&relay, certs, f->port) || ft_log_on(&relay)) {
      printf("no openssl CLI or TLS relay failed: TLS figures skipped\n");
      return 1;
    }
    r.tls_port = relay.port;
    /* The system bundle and the test CA: parsing costs what the real one does. */
    char cmd[2400];
    snprintf(cmd, sizeof cmd,
             "cat /etc/ssl/certs/ca-certificates.crt '%s/ca.crt' > '%s/bundle.pem' "
             "2>/dev/null || cp '%s/ca.crt' '%s/bundle.pem'", certs, certs, certs, certs);
    if (system(cmd) != 0)
      return 1;
    snprintf(r.env_ca, sizeof r.env_ca, "SSL_CERT_FILE=%s/bundle.pem", certs);
    /* One handshake first: the relay's first one also loads OpenSSL's
     * configuration and algorithms, which is the fake server's start-up,
     * not skynet's. */
    snprintf(cmd, sizeof cmd, "openssl s_client -connect 127.0.0.1:%d </dev/null >/dev/null 2>&1",
             relay.port);
    if (system(cmd) != 0)
      printf("(warming the TLS relay up failed)\n");
  }
  t0 = fk_ms();
  if (run_start(&r, f, 1000, 400))
    return 1;
  if ((hit = fk_wait(f, 0, "getUpdates", NULL, NULL, 10000)) < 0) {
    printf("skynet never polled\n");
    run_stop(&r);
    return 1;
  }
  printf("exec → first getUpdates: %lld ms (includes creating and migrating a new database)\n",
         f->recs[hit].at - t0);
  printf("  floor: exec → exit of skynet --version (loading the libraries): %lld ms\n",
         version_floor_ms());
  sleep(3);
  long rss = rss_kb(r.p.pid, &anon, &file);
  printf("idle RSS while long-polling: %ld KB (anonymous %ld KB, file-backed %ld KB: "
         "shared libraries)\n", rss, anon, file);
  print_smaps(r.p.pid);
  latency(f, tls ? &relay : NULL, "/help", 1001, 200);   /* 200: a p99 that is not just the worst one */
  latency(f, tls ? &relay : NULL, "/status", 1201, 200);
  kill(r.p.pid, SIGTERM);
  proc_finish(&r.p, 20000);
  proc_release(&r.p);
  if (restarts(&r, f, tls ? &relay : NULL, 0) || (tls && restarts(&r, f, &relay, 1)) ||
      first_starts(&r, f))
    return 1;
  tu_rmrf(r.dir);
  if (tls)
    tu_rmrf(certs);
  return 0;
}

/* Updates handled end to end (parse, route, persist, queue a reply) from a
 * fake answering batches of 100 /help from 512 users: from the first batch
 * served to the getUpdates whose offset confirms the last one. */
static int bench_throughput(long long total)
{
  static struct fk fk;
  struct run r = {0};
  long long until;

  if (fk_start(&fk))
    return 1;
  fk.gen_total = total;
  fk.gen_user0 = 5001;
  fk.gen_users = 512;
  if (run_start(&r, &fk, 5000, 512))
    return 1;
  for (until = fk_ms() + 120000; fk_ms() < until; usleep(20000)) {
    pthread_mutex_lock(&fk.mu);
    int done = fk.gen_last_us != 0;
    pthread_mutex_unlock(&fk.mu);
    if (done)
      break;
  }
  if (!fk.gen_last_us) {
    printf("throughput: did not finish\n");
    run_stop(&r);
    return 1;
  }
  double s = (double)(fk.gen_last_us - fk.gen_first_us) / 1e6;
  printf("throughput: %lld updates in %.2f s = %.0f updates/s (batches of 100, each a /help "
         "with a reply queued)\n", total, s, (double)total / s);
  run_stop(&r);
  return 0;
}

/* Achieved rate of sendMessage to chats lo..hi answered without a fault. */
static void pacing_rate(struct fk *f, const char *what, long long lo, long long hi)
{
  long long first = -1, last = -1;
  int n = 0;

  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->n_recs; i++) {
    const char *c = strstr(f->recs[i].body, "\"chat_id\":");
    long long chat = c ? strtoll(c + 10, NULL, 10) : 0;
    if (strcmp(f->recs[i].method, "sendMessage") || f->recs[i].fault != FK_NONE ||
        chat < lo || chat > hi)
      continue;
    if (getenv("BENCH_DEBUG") && last >= 0 && f->recs[i].at - last > 60)
      printf("    gap %lld ms before #%d\n", f->recs[i].at - last, n);
    if (first < 0)
      first = f->recs[i].at;
    last = f->recs[i].at;
    n++;
  }
  pthread_mutex_unlock(&f->mu);
  if (n > 1)
    printf("  %s: %d messages in %.2f s = %.2f/s\n", what, n, (last - first) / 1000.0,
           (n - 1) * 1000.0 / (double)(last - first));
}

/* Sending at the limit against a fake that answers 429 past Telegram's
 * limits: 300 private chats at once (global 30/s), 5 replies to one private
 * chat (1/s), 6 to one group (20/min). */
static int bench_pacing(void)
{
  static struct fk fk;
  struct run r = {0};
  int want = 300 + 5 + 6;
  long long until;

  if (fk_start(&fk))
    return 1;
  fk.enforce = 1;
  if (run_start(&r, &fk, 7000, 400))
    return 1;
  if (fk_wait(&fk, 0, "getUpdates", NULL, NULL, 10000) < 0) {
    printf("pacing: skynet never polled\n");
    run_stop(&r);
    return 1;
  }
  for (int i = 1; i <= 300; i++)
    fk_msg(&fk, 7000 + i, 7000 + i, "/help");
  for (int i = 0; i < 5; i++)
    fk_msg(&fk, 7301, 7301, "/status");
  for (int i = 0; i < 6; i++)
    fk_msg(&fk, 7302, -7302, "/status");
  for (until = fk_ms() + 120000; fk_ms() < until && fk_count_ok(&fk, 0, "sendMessage", "") < want;)
    usleep(50000);
  printf("outbox pacing against a limit-enforcing fake: %lld sent, %lld answered 429\n",
         fk.n_sent, fk.n_429);
  pacing_rate(&fk, "300 private chats (global limit 30/s)", 7001, 7300);
  pacing_rate(&fk, "one private chat (1/s)", 7301, 7301);
  pacing_rate(&fk, "one group (20/min)", -7302, -7302);
  run_stop(&r);
  return fk.n_sent >= want ? 0 : 1;
}

int main(int argc, char **argv)
{
  const char *only = argc > 1 ? argv[1] : NULL;
  int rc = 0;

  signal(SIGPIPE, SIG_IGN);
  if (!only || strcmp(only, "latency") == 0)
    rc |= bench_latency(0);
  if (!only || strcmp(only, "latency") == 0 || strcmp(only, "tls") == 0)
    rc |= bench_latency(1);
  if (!only || strcmp(only, "throughput") == 0)
    rc |= bench_throughput(argc > 2 ? atoll(argv[2]) : 20000);
  if (!only || strcmp(only, "pacing") == 0)
    rc |= bench_pacing();
  return rc;
}
