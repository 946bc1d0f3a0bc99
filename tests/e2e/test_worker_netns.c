/* A worker cut off from the network, on PostgreSQL: the worker runs in its
 * own network namespace and reaches the database through a veth pair (and a
 * relay in this process, since the test server listens on 127.0.0.1 only).
 * With its job running, the link goes down: the job is reclaimed by a worker
 * outside after the lease, the admins hear the cut-off worker is offline;
 * when the link comes back the worker reconnects, the admins hear it is back,
 * and the job has finished exactly once.
 *
 * Needs root and `ip netns` (skips saying so where the machine does not
 * allow it) and SKYNET_TEST_PG_URL (skips without it, fails under CI=true). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <sys/socket.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "engine/log.h"
#include "proc.h"

#define TAG "worker_netns"
#define LEASE_MS 2000

static char g_ns[32], g_veth_h[16], g_veth_n[16], g_host_ip[32], g_ns_ip[32];
static char g_dir[512], g_url[1300], g_ns_url[1400];
static char g_env_home[600], g_env_conf[700], g_env_db[1400], g_env_ns_db[1500];
static int g_pg_port, g_listen = -1;
static atomic_int g_stop;

/* ---- relay: host_ip:port (reachable from the namespace) → 127.0.0.1:pg -- */

static void *relay_conn(void *arg)
{
  int a = (int)(intptr_t)arg, b = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_pg_port)};
  char buf[16384];

  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (b < 0 || connect(b, (struct sockaddr *)&to, sizeof to) != 0)
    goto out;
  while (!atomic_load(&g_stop)) {
    struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    if (poll(p, 2, 200) < 0)
      break;
    for (int i = 0; i < 2; i++) {
      if (!p[i].revents)
        continue;
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0 || write(p[1 - i].fd, buf, (size_t)n) != n)
        goto out;
    }
  }
out:
  close(a);
  if (b >= 0)
    close(b);
  return NULL;
}

static void *relay_main(void *arg)
{
  (void)arg;
  while (!atomic_load(&g_stop)) {
    struct pollfd p = {g_listen, POLLIN, 0};
    pthread_t t;
    int c;

    if (poll(&p, 1, 200) <= 0)
      continue;
    if ((c = accept(g_listen, NULL, NULL)) < 0)
      continue;
    if (pthread_create(&t, NULL, relay_conn, (void *)(intptr_t)c) == 0)
      pthread_detach(t);
    else
      close(c);
  }
  return NULL;
}

static int relay_start(pthread_t *t, int *port)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof a;
  int one = 1;

  inet_pton(AF_INET, g_host_ip, &a.sin_addr);
  g_listen = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(g_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (g_listen < 0 || bind(g_listen, (struct sockaddr *)&a, sizeof a) ||
      listen(g_listen, 64) || getsockname(g_listen, (struct sockaddr *)&a, &len))
    return -1;
  *port = ntohs(a.sin_port);
  return pthread_create(t, NULL, relay_main, NULL);
}

/* ---- the namespace ------------------------------------------------------- */

static int sh(const char *fmt, ...)
{
  char cmd[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

static void netns_down(void)
{
  sh("ip netns del %s >/dev/null 2>&1", g_ns);
  sh("ip link del %s >/dev/null 2>&1", g_veth_h);
}

/* Returns 0, or says why the machine does not allow it. */
static int netns_up(char *why, size_t n)
{
  int net = (int)(getpid() % 200) + 20;

  snprintf(g_ns, sizeof g_ns, "skynet_t%ld", (long)getpid());
  snprintf(g_veth_h, sizeof g_veth_h, "skh%ld", (long)getpid() % 100000);
  snprintf(g_veth_n, sizeof g_veth_n, "skn%ld", (long)getpid() % 100000);
  snprintf(g_host_ip, sizeof g_host_ip, "10.213.%d.1", net);
  snprintf(g_ns_ip, sizeof g_ns_ip, "10.213.%d.2", net);
  if (geteuid() != 0) {
    snprintf(why, n, "not root");
    return -1;
  }
  if (sh("ip netns add %s >/dev/null 2>&1", g_ns)) {
    snprintf(why, n, "'ip netns add' is not allowed here");
    return -1;
  }
  if (sh("ip link add %s type veth peer name %s >/dev/null 2>&1", g_veth_h, g_veth_n) ||
      sh("ip link set %s netns %s", g_veth_n, g_ns) ||
      sh("ip addr add %s/24 dev %s && ip link set %s up", g_host_ip, g_veth_h, g_veth_h) ||
      sh("ip netns exec %s sh -c 'ip addr add %s/24 dev %s && ip link set %s up &&"
         " ip link set lo up'", g_ns, g_ns_ip, g_veth_n, g_veth_n) ||
      sh("ip netns exec %s ping -c1 -W2 %s >/dev/null 2>&1 ||"
         " ip netns exec %s sh -c 'exec 3<>/dev/tcp/%s/9' 2>/dev/null; true", g_ns,
         g_host_ip, g_ns, g_host_ip)) {
    snprintf(why, n, "cannot set up a veth pair into the namespace");
    netns_down();
    return -1;
  }
  return 0;
}

/* ---- the test ------------------------------------------------------------ */


static struct proc g_w[2];

static void nap(int ms)
{
  long long until = proc_ms() + ms;

  while (proc_ms() < until) {
    for (int i = 0; i < 2; i++)
      if (g_w[i].pid > 0)
        proc_pump(&g_w[i], 0);
    tu_sleep_ms(20);
  }
}

static int wait_state(struct ledger *l, int64_t id, enum job_state want, int ms, struct job *out)
{
  long long until = proc_ms() + ms;
  struct transition *t;
  size_t n;

  while (proc_ms() < until) {
    if (l->ops->job_get(l, id, out) == ERR_OK) {
      if (out->state == want)
        return 1;
      job_release(out);
    }
    nap(50);
  }
  memset(out, 0, sizeof *out);
  fprintf(stderr, "job #%lld did not reach %s; its transitions:\n", (long long)id,
          job_state_name(want));
  if (l->ops->job_transitions(l, id, &t, &n) == ERR_OK) {
    for (size_t i = 0; i < n; i++)
      fprintf(stderr, "  %lld %s -> %s by %s (%s)\n", (long long)t[i].at,
              t[i].has_from ? job_state_name(t[i].from) : "-", job_state_name(t[i].to),
              t[i].actor, t[i].reason ? t[i].reason : "");
    transition_list_free(t, n);
  }
  return 0;
}

static int wait_alert(struct ledger *l, const char *needle, int ms)
{
  long long until = proc_ms() + ms;

  while (proc_ms() < until) {
    struct outbox_msg *v = NULL;
    size_t n = 0;
    int found = 0;
    if (l->ops->outbox_pending(l, "console", ledger_now_ms() + 1000, 10000, &v, &n) == ERR_OK)
      for (size_t i = 0; i < n; i++)
        found |= strstr(v[i].text, needle) != NULL;
    outbox_list_free(v, n);
    if (found)
      return 1;
    nap(100);
  }
  fprintf(stderr, "no alert '%s'; the workers:\n", needle);
  struct worker_rec *w = NULL;
  size_t n = 0;
  if (l->ops->worker_list(l, &w, &n) == ERR_OK)
    for (size_t i = 0; i < n; i++)
      fprintf(stderr, "  %s %s (%s) expires %lld, now %lld\n", w[i].id, w[i].state,
              w[i].reason ? w[i].reason : "", (long long)w[i].expires_at, (long long)ledger_now_ms());
  worker_list_free(w, n);
  return 0;
}

TEST(worker_cut_off_from_the_network)
{
  char *ns_argv[] = {"/usr/sbin/ip", "netns", "exec", g_ns, SKYNET_BIN, "worker", NULL};
  char *argv[] = {SKYNET_BIN, "worker", NULL};
  char *env_ns[] = {g_env_home, g_env_ns_db, g_env_conf, "TELEGRAM_BOT_TOKEN=",
                    "SKYNET_LLM=offline", "SKYNET_LOG=error", "SKYNET_WORKERS=1", NULL};
  char *env[] = {g_env_home, g_env_db, g_env_conf, "TELEGRAM_BOT_TOKEN=",
                 "SKYNET_LLM=offline", "SKYNET_LOG=error", "SKYNET_WORKERS=1", NULL};
  struct ledger *l = tu_ledger_open(g_url);
  struct transition *t;
  char wid[128], host[200], needle[200];
  struct job j;
  size_t n;
  int64_t id;
  int owned = 0, succeeded = 0;

  ASSERT(l);
  ASSERT(proc_start(&g_w[0], ns_argv, env_ns) == 0);
  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  snprintf(wid, sizeof wid, "%.60s:%ld", host, (long)g_w[0].pid);
  id = tu_enqueue(l, "{\"steps\":[{\"action\":\"shell\",\"provider\":\"mock\",\"idempotent\":true,"
                  "\"args\":{\"argv\":[\"mock\",\"sleep\",\"4000\"]}}],\"risk\":\"WRITE\"}");
  ASSERT(id > 0);
  if (wait_state(l, id, JOB_RUNNING, 15000, &j)) {
    owned = j.lease_owner && strncmp(j.lease_owner, wid, strlen(wid)) == 0;
    job_release(&j);
  }
  ASSERT(owned);
  ASSERT_EQ(sh("ip netns exec %s ip link set %s down", g_ns, g_veth_n), 0);
  ASSERT(proc_start(&g_w[1], argv, env) == 0);
  /* the worker outside takes the job over once the lease is over (or, when
   * the link went down in the middle of one of the cut-off worker's
   * transactions, once the server has ended it: 30 s idle) */
  ASSERT(wait_state(l, id, JOB_SUCCEEDED, 60000, &j));
  ASSERT_EQ(j.attempts, 2);
  job_release(&j);
  snprintf(needle, sizeof needle, "worker %s is offline", wid);
  ASSERT(wait_alert(l, needle, 40000));
  ASSERT_EQ(sh("ip netns exec %s ip link set %s up", g_ns, g_veth_n), 0);
  snprintf(needle, sizeof needle, "worker %s is back online", wid);
  ASSERT(wait_alert(l, needle, 90000));
  ASSERT_EQ(l->ops->job_transitions(l, id, &t, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    succeeded += t[i].to == JOB_SUCCEEDED;
  transition_list_free(t, n);
  ASSERT_EQ(succeeded, 1);
  for (int i = 0; i < 2; i++) {
    kill(g_w[i].pid, SIGTERM);
    ASSERT_EQ(proc_finish(&g_w[i], 30000), 0);
    proc_release(&g_w[i]);
  }
  ledger_close(l);
}

int main(void)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  char why[200], conf[600], *p;
  pthread_t relay;
  int relay_port = 0;
  FILE *f;

  if (!pg || !*pg)
    return tpg_missing_is_failure("a worker cut off from the network") ? 1 : 0;
  if (!(p = strstr(pg, "@127.0.0.1:")) || (g_pg_port = (int)strtol(p + 11, NULL, 10)) <= 0) {
    fprintf(stderr, "netns: skipped: the test database is not at 127.0.0.1:PORT\n");
    return 0;
  }
  if (netns_up(why, sizeof why)) {
    fprintf(stderr, "netns: skipped: %s (a worker cut off from the network is not tested)\n", why);
    return 0;
  }
  log_setup(LOGL_ERROR, 0, NULL);
  if (relay_start(&relay, &relay_port) || tpg_schema_url(pg, TAG, g_url, 1200)) {
    netns_down();
    return 1;
  }
  /* the same database through the relay, from inside the namespace */
  snprintf(g_ns_url, sizeof g_ns_url, "%.*s@%s:%d%s", (int)(strstr(g_url, "@127.0.0.1:") - g_url),
           g_url, g_host_ip, relay_port, strchr(strstr(g_url, "@127.0.0.1:") + 11, '/'));
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(conf, sizeof conf, "%s/skynet.yaml", g_dir);
  if (!(f = fopen(conf, "w")))
    return 1;
  fprintf(f, "providers:\n  default: local\n  local: {type: local}\n  mock: {type: mock}\n"
          "queue:\n  lease_ms: %d\n  backoff_ms: 200\n", LEASE_MS);
  fclose(f);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_dir);
  snprintf(g_env_conf, sizeof g_env_conf, "SKYNET_CONFIG=%s", conf);
  snprintf(g_env_db, sizeof g_env_db, "SKYNET_DATABASE_URL=%s", g_url);
  snprintf(g_env_ns_db, sizeof g_env_ns_db, "SKYNET_DATABASE_URL=%s", g_ns_url);
  RUN(worker_cut_off_from_the_network);
  for (int i = 0; i < 2; i++)
    if (g_w[i].pid > 0) {
      proc_kill9(&g_w[i]);
      proc_release(&g_w[i]);
    }
  atomic_store(&g_stop, 1);
  pthread_join(relay, NULL);
  close(g_listen);
  netns_down();
  tpg_schema_drop(pg, TAG);
  tu_rmrf(g_dir);
  return test_summary();
}
