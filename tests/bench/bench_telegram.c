/* bench_telegram — skynet against the fake Bot API server: time from exec to
 * the first getUpdates, idle resident memory while long-polling, and reply
 * latency of /help and /status (update pushed to the fake, which holds the
 * long poll like Telegram → sendMessage received by the fake).  Prints
 * figures. */
#include <signal.h>
#include <sys/stat.h>

#include "../e2e/fakebot.h"
#include "../e2e/proc.h"
#include "../testutil.h"

static long rss_kb(pid_t pid)
{
  char path[64], line[256];
  long kb = -1;
  FILE *f;

  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!(f = fopen(path, "r")))
    return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

static int cmp(const void *a, const void *b)
{
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* Reply latency in µs of cmd over `n` users, each its own chat. */
static void latency(struct fk *fk, const char *cmd, int user0, int n)
{
  long long lat[200];
  int got = 0;

  for (int i = 0; i < n && i < 200; i++) {
    size_t mark = fk_mark(fk);
    char chat[32];
    long long q = fk_us();
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", user0 + i);
    fk_msg(fk, user0 + i, user0 + i, cmd);
    long h = fk_wait(fk, mark, "sendMessage", chat, NULL, 5000);
    if (h >= 0)
      lat[got++] = fk->recs[h].at_us - q;
    usleep(40 * 1000);   /* stay under 30 messages/s: no limit holds a reply back */
  }
  qsort(lat, (size_t)got, sizeof lat[0], cmp);
  if (got)
    printf("%s reply latency over %d chats: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", cmd, got,
           lat[got / 2] / 1000.0, lat[got * 99 / 100] / 1000.0, lat[got - 1] / 1000.0);
}

int main(void)
{
  static struct fk fk;
  char dir[512], home[600], env_home[700], env_api[128], env_users[4096];
  char *argv[] = {SKYNET_BIN, "run", NULL};
  struct proc p;
  long long t0;

  signal(SIGPIPE, SIG_IGN);
  tu_tmpdir(dir, sizeof dir);
  snprintf(home, sizeof home, "%s/home", dir);
  snprintf(env_home, sizeof env_home, "SKYNET_HOME=%s", home);
  if (fk_start(&fk))
    return 1;
  snprintf(env_api, sizeof env_api, "SKYNET_TELEGRAM_API=http://127.0.0.1:%d", fk.port);
  size_t off = (size_t)snprintf(env_users, sizeof env_users, "SKYNET_ALLOWED_USERS=");
  for (int i = 1; i <= 200; i++)
    off += (size_t)snprintf(env_users + off, sizeof env_users - off, "%s%d", i > 1 ? "," : "", 1000 + i);
  char *env[] = {env_home, env_api, env_users, "TELEGRAM_BOT_TOKEN=" FK_TOKEN, "SKYNET_CONFIG=",
                 "SKYNET_LOG=error", "SKYNET_LLM=offline", "SKYNET_DATABASE_URL=", NULL};
  t0 = fk_ms();
  if (proc_start(&p, argv, env))
    return 1;
  long hit = fk_wait(&fk, 0, "getUpdates", NULL, NULL, 10000);
  if (hit < 0)
    return 1;
  printf("exec → first getUpdates: %lld ms (includes creating and migrating a new database)\n",
         fk.recs[hit].at - t0);
  sleep(3);
  printf("idle RSS while long-polling: %ld KB\n", rss_kb(p.pid));
  latency(&fk, "/help", 1001, 100);
  latency(&fk, "/status", 1101, 100);
  kill(p.pid, SIGTERM);
  proc_finish(&p, 15000);
  proc_release(&p);
  tu_rmrf(dir);
  return 0;
}
