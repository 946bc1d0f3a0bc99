/* The ledger suite: every backend must pass it.  Runs against SQLite in a
 * temp dir, and against PostgreSQL when SKYNET_TEST_PG_URL is set. */
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "engine/ledger/ledger.h"
#include "engine/ledger/migrations.h"
#include "engine/log.h"

#include <sqlite3.h>

static char g_url[1024];

static struct ledger *open_l(void)
{
  return tu_ledger_open(g_url);
}

static int64_t new_job(struct ledger *l, const char *text)
{
  struct job j = {0};

  j.channel = "console";
  j.chat_id = 7;
  j.user_id = 1;
  j.text = (char *)text;
  if (l->ops->job_create(l, &j, "test"))
    return 0;
  return j.id;
}

/* Walks a job to QUEUED through the legal path. */
static int queue_job(struct ledger *l, int64_t id)
{
  return l->ops->job_transition(l, id, JOB_CREATED, JOB_PLANNED, "t", NULL) ||
         l->ops->job_transition(l, id, JOB_PLANNED, JOB_QUEUED, "t", NULL);
}

TEST(migrate_is_idempotent)
{
  struct ledger *l = open_l();
  int applied = -1, v = 0;

  ASSERT(l);
  ASSERT_EQ(l->ops->migrate(l, &applied), ERR_OK);
  ASSERT_EQ(applied, 0);
  ASSERT_EQ(l->ops->schema_version(l, &v), ERR_OK);
  ASSERT(v >= 1);
  ledger_close(l);
}

TEST(create_get_and_transitions)
{
  struct ledger *l = open_l();
  struct job j;
  struct transition *t;
  size_t n;
  int64_t id;

  ASSERT(l);
  id = new_job(l, "check disk");
  ASSERT(id > 0);
  ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_CREATED);
  ASSERT_STREQ(j.text, "check disk");
  ASSERT_STREQ(j.channel, "console");
  job_release(&j);
  ASSERT_EQ(l->ops->job_set_plan(l, id, "{\"steps\":[]}", "sum", RISK_WRITE), ERR_OK);
  ASSERT_EQ(l->ops->job_transition(l, id, JOB_CREATED, JOB_PLANNED, "planner", NULL), ERR_OK);
  /* compare-and-set: wrong from-state and illegal edges change nothing */
  ASSERT_EQ(l->ops->job_transition(l, id, JOB_CREATED, JOB_PLANNED, "x", NULL), ERR_STATE);
  ASSERT_EQ(l->ops->job_transition(l, id, JOB_PLANNED, JOB_SUCCEEDED, "x", NULL), ERR_STATE);
  ASSERT_EQ(l->ops->job_transition(l, 999999, JOB_PLANNED, JOB_QUEUED, "x", NULL), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->job_transition(l, id, JOB_PLANNED, JOB_AWAITING_APPROVAL, "policy", "rm"), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_AWAITING_APPROVAL);
  ASSERT_EQ(j.risk, RISK_WRITE);
  ASSERT_STREQ(j.summary, "sum");
  ASSERT_STREQ(j.reason, "rm");
  job_release(&j);
  ASSERT_EQ(l->ops->job_transitions(l, id, &t, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(t[0].has_from, 0);
  ASSERT_EQ(t[0].to, JOB_CREATED);
  ASSERT_EQ(t[2].from, JOB_PLANNED);
  ASSERT_EQ(t[2].to, JOB_AWAITING_APPROVAL);
  ASSERT_STREQ(t[2].actor, "policy");
  ASSERT(t[2].at > 0);
  transition_list_free(t, n);
  ledger_close(l);
}

/* The job of a console /task, planned: what job_create_routed stores. */
static void planned_job(struct job *j)
{
  j->channel = "console";
  j->chat_id = 7;
  j->user_id = 1;
  j->text = "uptime";
  j->plan_json = "{\"steps\":[]}";
  j->summary = "sum";
  j->risk = RISK_READ_ONLY;
}

/* Created claimed (the orchestrator's hand-off): RUNNING under the owner's
 * lease with the claim's transition, as a claim would leave it; only for a
 * queued job; the lease is the owner's (heartbeat, finish), nobody else's
 * claim takes it. */
TEST(create_routed_can_claim_at_once)
{
  struct ledger *l = open_l();
  struct job j = {0}, got;
  struct transition *t;
  size_t n;
  int cancel = 1;

  ASSERT(l);
  planned_job(&j);
  ASSERT_EQ(l->ops->job_create_routed(l, &j, "user:1", JOB_AWAITING_APPROVAL, "policy", "x",
                                      "w:1", 30000), ERR_STATE);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->job_create_routed(l, &j, "user:1", JOB_QUEUED, "policy", "reads only",
                                      "host:1:w0", 30000), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT(j.id > 0);
  ASSERT_EQ(j.state, JOB_RUNNING);
  ASSERT_EQ(j.attempts, 1);
  ASSERT_EQ(l->ops->job_get(l, j.id, &got), ERR_OK);
  ASSERT_EQ(got.state, JOB_RUNNING);
  ASSERT_EQ(got.attempts, 1);
  ASSERT_STREQ(got.lease_owner, "host:1:w0");
  ASSERT(got.lease_expires > ledger_now_ms() + 20000);
  ASSERT(got.lease_expires <= ledger_now_ms() + 31000);
  job_release(&got);
  ASSERT_EQ(l->ops->job_transitions(l, j.id, &t, &n), ERR_OK);
  ASSERT_EQ(n, 4);
  ASSERT_EQ(t[2].to, JOB_QUEUED);
  ASSERT_STREQ(t[2].reason, "reads only");
  ASSERT_EQ(t[3].from, JOB_QUEUED);
  ASSERT_EQ(t[3].to, JOB_RUNNING);
  ASSERT_STREQ(t[3].actor, "worker:host:1:w0");
  transition_list_free(t, n);
  ASSERT_EQ(l->ops->job_claim(l, "w:2", 30000, j.id, &got), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->job_heartbeat(l, j.id, "w:2", 30000, &cancel), ERR_STATE);
  ASSERT_EQ(l->ops->job_heartbeat(l, j.id, "host:1:w0", 30000, &cancel), ERR_OK);
  ASSERT_EQ(cancel, 0);
  ASSERT_EQ(l->ops->job_finish(l, j.id, "host:1:w0", JOB_SUCCEEDED, 0, "ok", NULL, NULL),
            ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, j.id, &got), ERR_OK);
  ASSERT_EQ(got.state, JOB_SUCCEEDED);
  job_release(&got);
  ledger_close(l);
}

struct tx_seen {
  int calls, committed, had_ledger;
};

static void tx_hook(void *arg, struct ledger *l, int committed)
{
  struct tx_seen *s = arg;

  s->calls++;
  s->committed = committed;
  s->had_ledger = l != NULL;
}

/* ledger_after_tx: called once when the transaction ends, with whether it
 * committed; closing inside one calls it with no ledger.  (A commit that
 * fails: test_ledger_pg, where a queued write fails at COMMIT.) */
TEST(after_tx_hooks_learn_how_the_transaction_ended)
{
  struct ledger *l = open_l();
  struct tx_seen a = {0}, b = {0}, c = {0}, d = {0};
  struct job j = {0};

  ASSERT(l);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(ledger_after_tx(l, tx_hook, &a), ERR_OK);
  ASSERT_EQ(ledger_after_tx(l, tx_hook, &b), ERR_OK);
  ASSERT_EQ(a.calls, 0);
  j.text = "t";
  ASSERT_EQ(l->ops->job_create(l, &j, "user:1"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(a.calls, 1);
  ASSERT_EQ(a.committed, 1);
  ASSERT_EQ(a.had_ledger, 1);
  ASSERT_EQ(b.calls, 1);
  ASSERT_EQ(b.committed, 1);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(a.calls, 1);         /* once only */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(ledger_after_tx(l, tx_hook, &c), ERR_OK);
  ASSERT_EQ(l->ops->rollback(l), ERR_OK);
  ASSERT_EQ(c.calls, 1);
  ASSERT_EQ(c.committed, 0);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(ledger_after_tx(l, tx_hook, &d), ERR_OK);
  ledger_close(l);
  ASSERT_EQ(d.calls, 1);
  ASSERT_EQ(d.committed, 0);
  ASSERT_EQ(d.had_ledger, 0);
}

TEST(claim_heartbeat_finish)
{
  struct ledger *l = open_l();
  struct job j;
  int cancel = -1;
  int64_t a, b;

  ASSERT(l);
  a = new_job(l, "a");
  b = new_job(l, "b");
  ASSERT(!queue_job(l, a) && !queue_job(l, b));
  ASSERT_EQ(l->ops->job_claim(l, "w1", 5000, a, &j), ERR_OK);
  ASSERT_EQ(j.id, a);
  ASSERT_EQ(j.state, JOB_RUNNING);
  ASSERT_STREQ(j.lease_owner, "w1");
  ASSERT_EQ(j.attempts, 1);
  job_release(&j);
  ASSERT_EQ(l->ops->job_claim(l, "w2", 5000, a, &j), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->job_heartbeat(l, a, "w1", 5000, &cancel), ERR_OK);
  ASSERT_EQ(cancel, 0);
  ASSERT_EQ(l->ops->job_heartbeat(l, a, "w2", 5000, &cancel), ERR_STATE);
  ASSERT_EQ(l->ops->job_request_cancel(l, a), ERR_OK);
  ASSERT_EQ(l->ops->job_heartbeat(l, a, "w1", 5000, &cancel), ERR_OK);
  ASSERT_EQ(cancel, 1);
  ASSERT_EQ(l->ops->job_finish(l, a, "w2", JOB_SUCCEEDED, 0, "x", NULL, NULL), ERR_STATE);
  ASSERT_EQ(l->ops->job_finish(l, a, "w1", JOB_FAILED, 3, "boom", "step 1 exited with 3", NULL), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, a, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_FAILED);
  ASSERT_EQ(j.has_exit_code, 1);
  ASSERT_EQ(j.exit_code, 3);
  ASSERT_STREQ(j.output_tail, "boom");
  ASSERT(j.lease_owner == NULL);
  job_release(&j);
  ASSERT_EQ(l->ops->job_heartbeat(l, a, "w1", 5000, &cancel), ERR_STATE);
  ledger_close(l);
}

/* The outbox rows of job id in channel "console". */
static int notices_of(struct ledger *l, int64_t id, char *text, size_t n)
{
  struct outbox_msg *v = NULL;
  size_t count = 0;
  int found = 0;

  if (l->ops->outbox_pending(l, "console", ledger_now_ms() + 1000, 1000, &v, &count))
    return -1;
  for (size_t i = 0; i < count; i++)
    if (v[i].job_id == id && found++ == 0 && text)
      snprintf(text, n, "%s", v[i].text);
  outbox_list_free(v, count);
  return found;
}

/* A job's end and its announcement in one statement: both land while the
 * lease holds, neither once it is gone; inside a transaction too; the text
 * is redacted like every notification. */
TEST(finish_notice_lands_only_with_the_lease)
{
  struct ledger *l = open_l();
  struct outbox_msg m = {0};
  struct transition *t;
  char text[200];
  struct job j;
  size_t n;
  int64_t a;

  ASSERT(l && l->ops->job_finish_notice);
  a = new_job(l, "told");
  ASSERT(a && !queue_job(l, a));
  ASSERT_EQ(l->ops->job_claim(l, "w1", 5000, a, &j), ERR_OK);
  job_release(&j);
  log_add_secret("s3cr3t-token");
  m.channel = "console";
  m.chat_id = 7;
  m.job_id = a;
  m.text = "job done, token s3cr3t-token";
  /* Not the owner: nothing changes, nothing is said, no error. */
  ASSERT_EQ(ledger_finish_notice(l, a, "w2", JOB_SUCCEEDED, 0, "x", NULL, &m), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, a, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_RUNNING);
  job_release(&j);
  ASSERT_EQ(notices_of(l, a, NULL, 0), 0);
  /* The owner, inside a transaction. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(ledger_finish_notice(l, a, "w1", JOB_FAILED, 2, "out", "step 1 exited with 2", &m),
            ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, a, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_FAILED);
  ASSERT_EQ(j.exit_code, 2);
  ASSERT_STREQ(j.output_tail, "out");
  ASSERT_STREQ(j.reason, "step 1 exited with 2");
  ASSERT(j.lease_owner == NULL);
  job_release(&j);
  ASSERT_EQ(l->ops->job_transitions(l, a, &t, &n), ERR_OK);
  ASSERT(n > 0);
  ASSERT_EQ(t[n - 1].to, JOB_FAILED);
  ASSERT_STREQ(t[n - 1].actor, "worker:w1");
  transition_list_free(t, n);
  ASSERT_EQ(notices_of(l, a, text, sizeof text), 1);
  ASSERT_CONTAINS(text, "job done");
  ASSERT(!strstr(text, "s3cr3t-token"));
  /* Once ended, again: nothing more. */
  ASSERT_EQ(ledger_finish_notice(l, a, "w1", JOB_SUCCEEDED, 0, "x", NULL, &m), ERR_OK);
  ASSERT_EQ(notices_of(l, a, NULL, 0), 1);
  log_clear_secrets();
  ledger_close(l);
}

TEST(expired_leases_are_found)
{
  struct ledger *l = open_l();
  struct job j, *v;
  size_t n;
  int64_t id;

  ASSERT(l);
  id = new_job(l, "lease");
  ASSERT(!queue_job(l, id));
  ASSERT_EQ(l->ops->job_claim(l, "gone", 1, id, &j), ERR_OK);
  job_release(&j);
  tu_sleep_ms(20);
  ASSERT_EQ(l->ops->job_expired(l, ledger_now_ms(), &v, &n), ERR_OK);
  int found = 0;
  for (size_t i = 0; i < n; i++)
    found |= v[i].id == id;
  job_list_free(v, n);
  ASSERT(found);
  ASSERT_EQ(l->ops->job_transition(l, id, JOB_RUNNING, JOB_QUEUED, "sup", "requeue"), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
  ASSERT(j.lease_owner == NULL);
  ASSERT_EQ(j.state, JOB_QUEUED);
  job_release(&j);
  ledger_close(l);
}

/* Claims every due job there is (left by earlier tests), so that a test
 * sees only its own. */
static void drain_queue(struct ledger *l)
{
  struct job v[8];
  int n;

  while (ledger_claim_some(l, "drain", 60000, 8, v, &n) == ERR_OK)
    while (n)
      job_release(&v[--n]);
}

/* Five queued jobs: claims of three, then of what is left, then none; each
 * RUNNING under its lease, oldest first, with its transition.  Checked for
 * the backend's own job_claim_some and for ledger_claim_some's fallback. */
static void claim_some_checks(struct ledger *l)
{
  struct job v[8];
  struct transition *t;
  int64_t ids[5];
  size_t nt;
  int n = -1;

  drain_queue(l);
  for (int i = 0; i < 5; i++) {
    ids[i] = new_job(l, "some");
    ASSERT(ids[i] && !queue_job(l, ids[i]));
  }
  ASSERT_EQ(ledger_claim_some(l, "w:some", 5000, 3, v, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(v[i].id, ids[i]);
    ASSERT_EQ(v[i].state, JOB_RUNNING);
    ASSERT_STREQ(v[i].lease_owner, "w:some");
    ASSERT(v[i].lease_expires > 0);
    ASSERT_EQ(v[i].attempts, 1);
    job_release(&v[i]);
  }
  ASSERT_EQ(l->ops->job_transitions(l, ids[1], &t, &nt), ERR_OK);
  ASSERT(nt >= 1);
  ASSERT_EQ(t[nt - 1].from, JOB_QUEUED);
  ASSERT_EQ(t[nt - 1].to, JOB_RUNNING);
  ASSERT_STREQ(t[nt - 1].actor, "worker:w:some");
  transition_list_free(t, nt);
  ASSERT_EQ(ledger_claim_some(l, "w:rest", 5000, 8, v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  ASSERT_EQ(v[0].id, ids[3]);
  ASSERT_EQ(v[1].id, ids[4]);
  ASSERT_STREQ(v[1].lease_owner, "w:rest");
  job_release(&v[0]);
  job_release(&v[1]);
  ASSERT_EQ(ledger_claim_some(l, "w:none", 5000, 8, v, &n), ERR_NOTFOUND);
  ASSERT_EQ(n, 0);
}

TEST(claim_some_takes_the_oldest_in_order)
{
  struct ledger *l = open_l();
  const struct ledger_ops *ops;
  struct ledger_ops plain;

  ASSERT(l);
  ASSERT(l->ops->job_claim_some != NULL);
  claim_some_checks(l);
  /* The fallback: job_claim one at a time in a transaction. */
  ops = l->ops;
  plain = *ops;
  plain.job_claim_some = NULL;
  l->ops = &plain;
  claim_some_checks(l);
  l->ops = ops;
  ledger_close(l);
}

struct race {
  int64_t first, last;
  int claimed;
  int some;                     /* claim with ledger_claim_some, 3 at a time */
};

static void *racer(void *arg)
{
  struct race *r = arg;
  struct ledger *l = open_l();
  char owner[32];
  struct job j;

  snprintf(owner, sizeof owner, "r%p", (void *)r);
  while (l && r->some) {
    struct job v[3];
    int n;
    if (ledger_claim_some(l, owner, 5000, 3, v, &n) != ERR_OK)
      break;
    for (int i = 0; i < n; i++) {
      r->claimed += v[i].id >= r->first && v[i].id <= r->last;
      l->ops->job_finish(l, v[i].id, owner, JOB_SUCCEEDED, 0, "", NULL, NULL);
      job_release(&v[i]);
    }
  }
  while (l && !r->some && l->ops->job_claim(l, owner, 5000, 0, &j) == ERR_OK) {
    if (j.id >= r->first && j.id <= r->last)
      r->claimed++;
    l->ops->job_finish(l, j.id, owner, JOB_SUCCEEDED, 0, "", NULL, NULL);
    job_release(&j);
  }
  ledger_close(l);
  return NULL;
}

TEST(concurrent_claims_take_each_job_once)
{
  struct ledger *l = open_l();
  struct race r[4];
  pthread_t t[4];
  int64_t first = 0, last = 0;
  int total = 0;

  ASSERT(l);
  for (int i = 0; i < 40; i++) {
    int64_t id = new_job(l, "race");
    ASSERT(id && !queue_job(l, id));
    if (!first)
      first = id;
    last = id;
  }
  /* Two take one at a time, two take some at a time. */
  for (int i = 0; i < 4; i++) {
    r[i] = (struct race){first, last, 0, i % 2};
    pthread_create(&t[i], NULL, racer, &r[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    total += r[i].claimed;
  }
  ASSERT_EQ(total, 40);
  ledger_close(l);
}

/* Committers on their own connections, each message alone or with a kv
 * write in a transaction, while a sender takes what is pending: each
 * message is handed out exactly once.  On SQLite the commits share disk
 * syncs (the WAL hook's group sync) and the sender waits for one before it
 * hands anything out, so this also catches a lost wakeup (a hang). */
#define CC_THREADS 5
#define CC_EACH 40

struct committer {
  int k;
  int failed;
};

static void *committer_main(void *arg)
{
  struct committer *c = arg;
  struct ledger *l = open_l();
  char text[64], key[64];

  if (!l) {
    c->failed++;
    return NULL;
  }
  for (int i = 0; i < CC_EACH; i++) {
    struct outbox_msg m = {0};
    snprintf(text, sizeof text, "cc %d %d", c->k, i);
    m.channel = "cc";
    m.chat_id = c->k;
    m.text = text;
    if (i % 2) {
      snprintf(key, sizeof key, "cc.%d", c->k);
      if (l->ops->begin(l) || l->ops->kv_set(l, key, text) || l->ops->outbox_put(l, &m, NULL) ||
          l->ops->commit(l))
        c->failed++;
    } else if (l->ops->outbox_put(l, &m, NULL)) {
      c->failed++;
    }
  }
  ledger_close(l);
  return NULL;
}

TEST(concurrent_commits_each_sent_once)
{
  struct ledger *l = open_l();
  struct committer c[CC_THREADS];
  pthread_t t[CC_THREADS];
  static unsigned char seen[CC_THREADS][CC_EACH];
  int got = 0, dup = 0, failed = 0, rounds = 0;

  ASSERT(l);
  memset(seen, 0, sizeof seen);
  for (int i = 0; i < CC_THREADS; i++) {
    c[i] = (struct committer){i, 0};
    pthread_create(&t[i], NULL, committer_main, &c[i]);
  }
  while (got + dup < CC_THREADS * CC_EACH && rounds++ < 20000) {
    struct outbox_msg *v;
    size_t n;
    ASSERT_EQ(l->ops->outbox_pending(l, "cc", ledger_now_ms(), 16, &v, &n), ERR_OK);
    for (size_t i = 0; i < n; i++) {
      int k, x;
      if (sscanf(v[i].text, "cc %d %d", &k, &x) == 2 && k >= 0 && k < CC_THREADS && x >= 0 &&
          x < CC_EACH) {
        if (seen[k][x]++)
          dup++;
        else
          got++;
      }
      ASSERT_EQ(l->ops->outbox_done(l, v[i].id), ERR_OK);
    }
    outbox_list_free(v, n);
    if (!n)
      usleep(200);
  }
  for (int i = 0; i < CC_THREADS; i++) {
    pthread_join(t[i], NULL);
    failed += c[i].failed;
  }
  ASSERT_EQ(failed, 0);
  ASSERT_EQ(dup, 0);
  ASSERT_EQ(got, CC_THREADS * CC_EACH);
  ledger_close(l);
}

TEST(list_filters_and_orders)
{
  struct ledger *l = open_l();
  struct job_filter f = {"console", 7, 0, JOB_CREATED, 1000};
  struct job *v;
  size_t n;
  int64_t id;

  ASSERT(l);
  id = new_job(l, "newest");
  ASSERT_EQ(l->ops->job_list(l, &f, &v, &n), ERR_OK);
  ASSERT(n >= 1);
  ASSERT_EQ(v[0].id, id);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(v[i].state, JOB_CREATED);
  job_list_free(v, n);
  f.chat_id = 8;
  ASSERT_EQ(l->ops->job_list(l, &f, &v, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  job_list_free(v, n);
  ledger_close(l);
}

TEST(steps_messages_outbox_kv)
{
  struct ledger *l = open_l();
  struct job_step_rec r = {0}, *sv;
  struct chat_msg *mv;
  struct outbox_msg m = {0}, *ov;
  size_t n;
  int64_t id, oid;
  char *val;

  ASSERT(l);
  id = new_job(l, "s");
  r.idx = 0;
  r.state = "RUNNING";
  ASSERT_EQ(l->ops->step_record(l, id, &r), ERR_OK);
  r.state = "SUCCEEDED";
  r.has_exit_code = 1;
  r.output_tail = "done";
  ASSERT_EQ(l->ops->step_record(l, id, &r), ERR_OK);
  ASSERT_EQ(l->ops->step_list(l, id, &sv, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(sv[0].state, "SUCCEEDED");
  ASSERT_STREQ(sv[0].output_tail, "done");
  job_step_list_free(sv, n);

  for (int i = 0; i < 5; i++) {
    char t[16];
    snprintf(t, sizeof t, "m%d", i);
    ASSERT_EQ(l->ops->msg_append(l, "console", 4242, i % 2 ? "assistant" : "user", t), ERR_OK);
  }
  ASSERT_EQ(l->ops->msg_recent(l, "console", 4242, 3, &mv, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  ASSERT_STREQ(mv[0].text, "m2");
  ASSERT_STREQ(mv[2].text, "m4");
  chat_msg_list_free(mv, n);

  m.channel = "unit";
  m.chat_id = 5;
  m.text = "hello";
  m.edit_key = "job:1:progress";
  ASSERT_EQ(l->ops->outbox_put(l, &m, &oid), ERR_OK);
  ASSERT_EQ(l->ops->outbox_pending(l, "unit", ledger_now_ms(), 10, &ov, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(ov[0].text, "hello");
  ASSERT_STREQ(ov[0].edit_key, "job:1:progress");
  outbox_list_free(ov, n);
  ASSERT_EQ(l->ops->outbox_retry(l, oid, ledger_now_ms() + 60000, "429"), ERR_OK);
  ASSERT_EQ(l->ops->outbox_pending(l, "unit", ledger_now_ms(), 10, &ov, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  outbox_list_free(ov, n);
  ASSERT_EQ(l->ops->outbox_retry(l, oid, 0, "again"), ERR_OK);
  ASSERT_EQ(l->ops->outbox_pending(l, "unit", ledger_now_ms(), 10, &ov, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_EQ(ov[0].attempts, 2);
  outbox_list_free(ov, n);
  ASSERT_EQ(l->ops->outbox_done(l, oid), ERR_OK);
  ASSERT_EQ(l->ops->outbox_pending(l, "unit", ledger_now_ms(), 10, &ov, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  outbox_list_free(ov, n);

  ASSERT_EQ(l->ops->kv_get(l, "offset", &val), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->kv_set(l, "offset", "10"), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "offset", "11"), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "offset", &val), ERR_OK);
  ASSERT_STREQ(val, "11");
  free(val);
  ledger_close(l);
}

TEST(transactions_roll_back_together)
{
  struct ledger *l = open_l();
  struct outbox_msg m = {0}, *ov;
  char *val = NULL;
  size_t n;

  ASSERT(l);
  m.channel = "txtest";
  m.text = "reply";
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->begin(l), ERR_STATE);
  ASSERT_EQ(l->ops->outbox_put(l, &m, NULL), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "txoffset", "5"), ERR_OK);
  ASSERT_EQ(l->ops->rollback(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "txoffset", &val), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->outbox_pending(l, "txtest", ledger_now_ms(), 10, &ov, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  outbox_list_free(ov, n);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->outbox_put(l, &m, NULL), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "txoffset", "6"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "txoffset", &val), ERR_OK);
  ASSERT_STREQ(val, "6");
  free(val);
  ledger_close(l);
}

TEST(data_survives_reopen)
{
  struct ledger *l = open_l();
  struct job j;
  int64_t id;

  ASSERT(l);
  id = new_job(l, "persist me");
  ledger_close(l);
  l = open_l();
  ASSERT(l);
  ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
  ASSERT_STREQ(j.text, "persist me");
  job_release(&j);
  ledger_close(l);
}

/* Giving back the page cache loses nothing, is a no-op inside a
 * transaction, and on SQLite really shrinks what the connection holds. */
TEST(release_memory_keeps_everything)
{
  struct ledger *l = open_l();
  char text[2048], *v = NULL;
  struct job j;
  int64_t first = 0, last = 0;
  int sqlite = strncmp(g_url, "sqlite:", 7) == 0;

  ASSERT(l);
  memset(text, 'x', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  for (int i = 0; i < 300; i++) {
    last = new_job(l, text);
    ASSERT(last > 0);
    if (!first)
      first = last;
  }
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  for (int64_t id = first; id <= last; id++) {   /* reads every page into the cache */
    ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
    job_release(&j);
  }
  sqlite3_int64 before = sqlite3_memory_used();
  ledger_release_memory(l);
  if (sqlite)   /* 300 rows of 2 KB: well over 100 KB of cached pages */
    ASSERT(sqlite3_memory_used() < before - 100 * 1024);
  ASSERT_EQ(l->ops->job_get(l, last, &j), ERR_OK);
  ASSERT_STREQ(j.text, text);
  job_release(&j);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "release.test", "kept"), ERR_OK);
  ledger_release_memory(l);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "release.test", &v), ERR_OK);
  ASSERT_STREQ(v, "kept");
  free(v);
  ledger_close(l);
}

TEST(chat_turns_and_token_usage)
{
  struct ledger *l = open_l();
  struct chat_turn *v = NULL;
  size_t n = 0, mine = 0;
  int64_t a = 0, b = 0, p, c;
  int64_t since = ledger_now_ms() - 1000;

  ASSERT(l);
  ASSERT_EQ(l->ops->turn_put(l, "turns", 41, 5, "hello", &a), ERR_OK);
  ASSERT_EQ(l->ops->turn_put(l, "turns", 42, 6, "world", &b), ERR_OK);
  ASSERT(a > 0 && b > a);
  ASSERT_EQ(l->ops->turn_pending(l, 100, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].channel, "turns") == 0) {
      ASSERT(mine || (v[i].id == a && strcmp(v[i].text, "hello") == 0 && v[i].user_id == 5));
      mine++;
    }
  ASSERT_EQ(mine, 2);
  chat_turn_list_free(v, n);
  ASSERT_EQ(l->ops->turn_done(l, a), ERR_OK);
  ASSERT_EQ(l->ops->turn_pending(l, 100, &v, &n), ERR_OK);
  mine = 0;
  for (size_t i = 0; i < n; i++)
    mine += strcmp(v[i].channel, "turns") == 0;
  ASSERT_EQ(mine, 1);
  chat_turn_list_free(v, n);

  struct llm_usage u1 = {"turns", 41, 9001, "m", 100, 10};
  struct llm_usage u2 = {"turns", 41, 0, "m", 5, 1};
  struct llm_usage u3 = {"turns", 42, 9001, "m", 7, 3};
  ASSERT_EQ(l->ops->usage_add(l, &u1), ERR_OK);
  ASSERT_EQ(l->ops->usage_add(l, &u2), ERR_OK);
  ASSERT_EQ(l->ops->usage_add(l, &u3), ERR_OK);
  struct usage_filter chat = {since, "turns", 41, 0}, job = {since, NULL, 0, 9001};
  struct usage_filter later = {ledger_now_ms() + 60000, "turns", 41, 0};
  ASSERT_EQ(l->ops->usage_sum(l, &chat, &p, &c), ERR_OK);
  ASSERT_EQ(p, 105);
  ASSERT_EQ(c, 11);
  ASSERT_EQ(l->ops->usage_sum(l, &job, &p, &c), ERR_OK);
  ASSERT_EQ(p + c, 120);
  ASSERT_EQ(l->ops->usage_sum(l, &later, &p, &c), ERR_OK);
  ASSERT_EQ(p + c, 0);
  ledger_close(l);
}

TEST(bad_urls_are_refused)
{
  struct ledger *l;
  char err[256];

  ASSERT_EQ(ledger_open("mysql://x", &l, err, sizeof err), ERR_CONFIG);
  ASSERT_CONTAINS(err, "sqlite://");
  ASSERT_EQ(ledger_open("sqlite:///nonexistent-dir/x/y.db", &l, err, sizeof err), ERR_DB);
  ASSERT_CONTAINS(err, "cannot open");
}

TEST(requeue_with_backoff_is_not_claimed_early)
{
  struct ledger *l = open_l();
  struct job j;
  struct transition *t;
  size_t n;
  int64_t id;

  ASSERT(l);
  id = new_job(l, "retry me");
  ASSERT(!queue_job(l, id));
  ASSERT_EQ(l->ops->job_claim(l, "w1", 5000, id, &j), ERR_OK);
  job_release(&j);
  /* only the holder of the lease may put it back */
  ASSERT_EQ(l->ops->job_requeue(l, id, "w2", 0, "sup", "x"), ERR_STATE);
  ASSERT_EQ(l->ops->job_requeue(l, id, "w1", 400, "supervisor", "provider unavailable"), ERR_OK);
  ASSERT_EQ(l->ops->job_get(l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_QUEUED);
  ASSERT(j.lease_owner == NULL);
  ASSERT(j.not_before > 0);
  ASSERT_EQ(j.attempts, 1);
  job_release(&j);
  ASSERT_EQ(l->ops->job_requeue(l, id, "w1", 0, "sup", "again"), ERR_STATE);
  /* not due yet: the claim skips it */
  ASSERT_EQ(l->ops->job_claim(l, "w2", 5000, id, &j), ERR_NOTFOUND);
  tu_sleep_ms(500);
  ASSERT_EQ(l->ops->job_claim(l, "w2", 5000, id, &j), ERR_OK);
  ASSERT_EQ(j.attempts, 2);
  ASSERT_STREQ(j.lease_owner, "w2");
  job_release(&j);
  ASSERT_EQ(l->ops->job_transitions(l, id, &t, &n), ERR_OK);
  ASSERT(n >= 2);
  ASSERT_EQ(t[n - 2].to, JOB_QUEUED);
  ASSERT_STREQ(t[n - 2].reason, "provider unavailable");
  ASSERT_EQ(t[n - 1].to, JOB_RUNNING);
  transition_list_free(t, n);
  ledger_close(l);
}

static int find_worker(struct ledger *l, const char *id, struct worker_rec *out)
{
  struct worker_rec *v = NULL;
  size_t n = 0;
  int found = 0;

  if (l->ops->worker_list(l, &v, &n))
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (!found && strcmp(v[i].id, id) == 0) {
      *out = v[i];
      memset(&v[i], 0, sizeof v[i]);
      found = 1;
    }
  }
  worker_list_free(v, n);
  return found;
}

/* The kinds of the newest events of one worker, oldest first: "online,back". */
static void worker_kinds(struct ledger *l, const char *id, char *buf, size_t len)
{
  struct worker_event *v = NULL;
  size_t n = 0;

  buf[0] = '\0';
  if (l->ops->worker_events(l, 100, &v, &n))
    return;
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i].worker_id, id) == 0)
      snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", *buf ? "," : "", v[i].kind);
  worker_event_list_free(v, n);
}

TEST(worker_registry_online_offline_back)
{
  struct ledger *l = open_l();
  struct worker_rec w = {0}, got, *v;
  char kinds[256];
  size_t n;
  int back = -1;

  ASSERT(l);
  w.id = "hostA:101";
  w.host = "hostA";
  w.pid = 101;
  w.providers = "local,mock";
  w.capacity = 4;
  ASSERT_EQ(l->ops->worker_heartbeat(l, "nobody:1", 0, 1000, &back), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->worker_register(l, &w, 200), ERR_OK);
  ASSERT(find_worker(l, "hostA:101", &got));
  ASSERT_STREQ(got.state, "online");
  ASSERT_STREQ(got.providers, "local,mock");
  ASSERT_EQ(got.capacity, 4);
  ASSERT_EQ(got.pid, 101);
  worker_rec_release(&got);
  ASSERT_EQ(l->ops->worker_heartbeat(l, "hostA:101", 3, 200, &back), ERR_OK);
  ASSERT_EQ(back, 0);
  ASSERT(find_worker(l, "hostA:101", &got));
  ASSERT_EQ(got.load, 3);
  worker_rec_release(&got);
  /* alive: nothing expires */
  ASSERT_EQ(l->ops->worker_expire(l, ledger_now_ms(), &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    ASSERT(strcmp(v[i].id, "hostA:101") != 0);
  worker_list_free(v, n);
  tu_sleep_ms(300);
  /* expired: reported once, then not again */
  ASSERT_EQ(l->ops->worker_expire(l, ledger_now_ms(), &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].id, "hostA:101");
  ASSERT_STREQ(v[0].state, "offline");
  worker_list_free(v, n);
  ASSERT_EQ(l->ops->worker_expire(l, ledger_now_ms(), &v, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  worker_list_free(v, n);
  /* it heartbeats again: back, once */
  ASSERT_EQ(l->ops->worker_heartbeat(l, "hostA:101", 0, 5000, &back), ERR_OK);
  ASSERT_EQ(back, 1);
  ASSERT_EQ(l->ops->worker_heartbeat(l, "hostA:101", 0, 5000, &back), ERR_OK);
  ASSERT_EQ(back, 0);
  /* a clean stop, once */
  ASSERT_EQ(l->ops->worker_stop(l, "hostA:101", "stopped"), ERR_OK);
  ASSERT_EQ(l->ops->worker_stop(l, "hostA:101", "stopped"), ERR_NOTFOUND);
  ASSERT(find_worker(l, "hostA:101", &got));
  ASSERT_STREQ(got.state, "offline");
  ASSERT_STREQ(got.reason, "stopped");
  worker_rec_release(&got);
  worker_kinds(l, "hostA:101", kinds, sizeof kinds);
  ASSERT_STREQ(kinds, "online,offline,back,offline");
  /* bad input is refused */
  w.id = NULL;
  ASSERT_EQ(l->ops->worker_register(l, &w, 200), ERR_INVAL);
  ledger_close(l);
}

TEST(locks_are_exclusive_until_released_or_expired)
{
  struct ledger *l = open_l(), *m = open_l();

  ASSERT(l && m);
  ASSERT_EQ(l->ops->lock_acquire(l, "reclaim", "p1", 300), ERR_OK);
  ASSERT_EQ(m->ops->lock_acquire(m, "reclaim", "p2", 300), ERR_BUSY);
  /* the holder renews it; another name is free */
  ASSERT_EQ(l->ops->lock_acquire(l, "reclaim", "p1", 300), ERR_OK);
  ASSERT_EQ(m->ops->lock_acquire(m, "other", "p2", 300), ERR_OK);
  ASSERT_EQ(m->ops->lock_release(m, "reclaim", "p2"), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->lock_release(l, "reclaim", "p1"), ERR_OK);
  ASSERT_EQ(m->ops->lock_acquire(m, "reclaim", "p2", 300), ERR_OK);
  /* p2 lets it expire: p1 takes it over, and p2 no longer holds it */
  tu_sleep_ms(400);
  ASSERT_EQ(l->ops->lock_acquire(l, "reclaim", "p1", 300), ERR_OK);
  ASSERT_EQ(m->ops->lock_release(m, "reclaim", "p2"), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->lock_release(l, "reclaim", "p1"), ERR_OK);
  ASSERT_EQ(m->ops->lock_release(m, "other", "p2"), ERR_OK);
  ledger_close(l);
  ledger_close(m);
}

/* A quick job's log kept in the ledger: appended to (a retry's lines after
 * the first attempt's), read back whole, and none for a job without. */
TEST(job_logs_are_kept_and_appended)
{
  struct ledger *l = open_l();
  char *v = NULL;
  int64_t id, other;

  ASSERT(l);
  id = new_job(l, "logs");
  other = new_job(l, "logs nothing");
  ASSERT_EQ(l->ops->job_log_get(l, id, &v), ERR_NOTFOUND);
  ASSERT(v == NULL);
  ASSERT_EQ(l->ops->job_log_put(l, id, "{\"text\":\"one\"}\n"), ERR_OK);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->job_log_put(l, id, "{\"text\":\"two\"}\n"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->job_log_put(l, id, "{\"text\":\"rolled back\"}\n"), ERR_OK);
  ASSERT_EQ(l->ops->rollback(l), ERR_OK);
  ASSERT_EQ(l->ops->job_log_get(l, id, &v), ERR_OK);
  ASSERT_STREQ(v, "{\"text\":\"one\"}\n{\"text\":\"two\"}\n");
  free(v);
  ASSERT_EQ(l->ops->job_log_get(l, other, &v), ERR_NOTFOUND);
  /* only for a job that exists */
  ASSERT(l->ops->job_log_put(l, 999999999, "x\n") != ERR_OK);
  ledger_close(l);
}

TEST(artifacts_recorded_and_listed)
{
  struct ledger *l = open_l();
  struct artifact a = {0}, b = {0}, *v;
  size_t n;
  int64_t id, other;
  int ver = 0;

  ASSERT(l);
  ASSERT_EQ(l->ops->schema_version(l, &ver), ERR_OK);
  ASSERT(ver >= 2);
  id = new_job(l, "makes files");
  other = new_job(l, "makes nothing");
  a.job_id = id;
  a.step = 1;
  a.name = "/tmp/out/report.txt";
  a.size = 5000000000LL;        /* beyond 32 bits */
  snprintf(a.sha256, sizeof a.sha256, "%064d", 7);
  ASSERT_EQ(l->ops->artifact_add(l, &a), ERR_OK);
  ASSERT(a.id > 0);
  ASSERT(a.created_at > 0);
  b = a;
  b.step = 2;
  b.name = "/tmp/out/b.bin";
  b.size = 0;
  ASSERT_EQ(l->ops->artifact_add(l, &b), ERR_OK);
  ASSERT(b.id > a.id);
  ASSERT_EQ(l->ops->artifact_list(l, id, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  ASSERT_EQ(v[0].id, a.id);
  ASSERT_EQ(v[0].job_id, id);
  ASSERT_EQ(v[0].step, 1);
  ASSERT_STREQ(v[0].name, "/tmp/out/report.txt");
  ASSERT_EQ(v[0].size, 5000000000LL);
  ASSERT_STREQ(v[0].sha256, a.sha256);
  ASSERT_EQ(v[0].created_at, a.created_at);
  ASSERT_STREQ(v[1].name, "/tmp/out/b.bin");
  ASSERT_EQ(v[1].size, 0);
  artifact_list_free(v, n);
  ASSERT_EQ(l->ops->artifact_list(l, other, &v, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  artifact_list_free(v, n);
  /* an artifact belongs to a job that exists */
  a.job_id = 999999999;
  ASSERT_EQ(l->ops->artifact_add(l, &a), ERR_DB);
  ledger_close(l);
}

/* A planned job stored already routed: the same row and transitions as
 * create, set_plan and two transitions; a queued one can be claimed. */
TEST(create_routed_records_every_transition)
{
  struct ledger *l = open_l();
  struct job j = {0}, got;
  struct transition *t;
  size_t n;

  ASSERT(l);
  planned_job(&j);
  ASSERT_EQ(l->ops->job_create_routed(l, &j, "user:1", JOB_SUCCEEDED, "policy", "x", NULL, 0),
            ERR_STATE);
  ASSERT_EQ(l->ops->job_create_routed(l, &j, "user:1", JOB_QUEUED, "policy", "reads only", NULL,
                                      0), ERR_OK);
  ASSERT(j.id > 0);
  ASSERT_EQ(l->ops->job_get(l, j.id, &got), ERR_OK);
  ASSERT_EQ(got.state, JOB_QUEUED);
  ASSERT_EQ(got.risk, RISK_READ_ONLY);
  ASSERT_STREQ(got.plan_json, "{\"steps\":[]}");
  ASSERT_STREQ(got.summary, "sum");
  ASSERT_STREQ(got.reason, "reads only");
  ASSERT_STREQ(got.text, "uptime");
  ASSERT(got.created_at > 0);
  job_release(&got);
  ASSERT_EQ(l->ops->job_transitions(l, j.id, &t, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(t[0].has_from, 0);
  ASSERT_EQ(t[0].to, JOB_CREATED);
  ASSERT_STREQ(t[0].actor, "user:1");
  ASSERT_EQ(t[1].from, JOB_CREATED);
  ASSERT_EQ(t[1].to, JOB_PLANNED);
  ASSERT_STREQ(t[1].actor, "planner");
  ASSERT_EQ(t[2].from, JOB_PLANNED);
  ASSERT_EQ(t[2].to, JOB_QUEUED);
  ASSERT_STREQ(t[2].actor, "policy");
  ASSERT_STREQ(t[2].reason, "reads only");
  transition_list_free(t, n);
  ASSERT_EQ(l->ops->job_claim(l, "w:1", 30000, j.id, &got), ERR_OK);
  ASSERT_EQ(got.state, JOB_RUNNING);
  job_release(&got);
  ledger_close(l);
}

static void run_suite(void)
{
  RUN(migrate_is_idempotent);
  RUN(create_get_and_transitions);
  RUN(create_routed_records_every_transition);
  RUN(create_routed_can_claim_at_once);
  RUN(after_tx_hooks_learn_how_the_transaction_ended);
  RUN(claim_heartbeat_finish);
  RUN(finish_notice_lands_only_with_the_lease);
  RUN(expired_leases_are_found);
  RUN(concurrent_claims_take_each_job_once);
  RUN(claim_some_takes_the_oldest_in_order);
  RUN(concurrent_commits_each_sent_once);
  RUN(list_filters_and_orders);
  RUN(steps_messages_outbox_kv);
  RUN(transactions_roll_back_together);
  RUN(data_survives_reopen);
  RUN(release_memory_keeps_everything);
  RUN(artifacts_recorded_and_listed);
  RUN(job_logs_are_kept_and_appended);
  RUN(chat_turns_and_token_usage);
  RUN(bad_urls_are_refused);
  RUN(requeue_with_backoff_is_not_claimed_early);
  RUN(worker_registry_online_offline_back);
  RUN(locks_are_exclusive_until_released_or_expired);
}

static char g_dir[512];   /* the SQLite tests' directory */

/* SQLite: the WAL hook that syncs commits replaces SQLite's automatic
 * checkpoint, so it must checkpoint too: many small commits leave the
 * write-ahead log near the checkpoint threshold (1000 pages), not growing
 * with every commit. */
TEST(wal_stays_bounded)
{
  char url[600], wal[600];
  struct ledger *l;
  struct stat st;

  snprintf(url, sizeof url, "sqlite://%s/wal.db", g_dir);
  snprintf(wal, sizeof wal, "%s/wal.db-wal", g_dir);
  ASSERT((l = tu_ledger_open(url)));
  for (int i = 0; i < 2500; i++) {
    char v[32];
    snprintf(v, sizeof v, "%d", i);
    ASSERT_EQ(l->ops->kv_set(l, i % 2 ? "wal.a" : "wal.b", v), ERR_OK);
  }
  int found = stat(wal, &st) == 0;   /* before closing: the last close removes the WAL */
  ledger_close(l);
  ASSERT(found);
  fprintf(stderr, "  the WAL is %lld bytes after 2500 commits\n", (long long)st.st_size);
  ASSERT(st.st_size <= 6 * 1024 * 1024);
}

struct wal_writer {
  const char *url;
  int id, failed;
  int tx;                       /* each write in begin/commit, as a submission */
};

static void *wal_writer_main(void *arg)
{
  struct wal_writer *w = arg;
  struct ledger *l = tu_ledger_open(w->url);

  for (int i = 0; l && i < (w->tx ? 4000 : 1500) && !w->failed; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "walc.%d", w->id);
    snprintf(v, sizeof v, "%d", i);
    if (w->tx)
      w->failed = l->ops->begin(l) != ERR_OK || l->ops->kv_set(l, k, v) != ERR_OK ||
                  l->ops->commit(l) != ERR_OK;
    else
      w->failed = l->ops->kv_set(l, k, v) != ERR_OK;
  }
  w->failed |= l == NULL;
  ledger_close(l);
  return NULL;
}

/* Four writers on a file of g_dir (each in begin/commit when tx), while
 * one more connection keeps the WAL once they close; *size: the WAL
 * file's size then, or -1. */
static void wal_after_writers(const char *file, int tx, long long *size)
{
  char url[600], wal[600];
  struct wal_writer w[4];
  pthread_t t[4];
  struct ledger *l;
  struct stat st;
  int found;

  *size = -1;
  snprintf(url, sizeof url, "sqlite://%s/%s", g_dir, file);
  snprintf(wal, sizeof wal, "%s/%s-wal", g_dir, file);
  ASSERT((l = tu_ledger_open(url)));
  for (int i = 0; i < 4; i++) {
    w[i] = (struct wal_writer){url, i, 0, tx};
    ASSERT_EQ(pthread_create(&t[i], NULL, wal_writer_main, &w[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    ASSERT_EQ(w[i].failed, 0);
  }
  found = stat(wal, &st) == 0;
  ledger_close(l);
  ASSERT(found);
  *size = (long long)st.st_size;
}

/* The same with four connections committing at once: a checkpoint that
 * runs while the others commit never takes every frame, so the WAL would
 * never start again (it grew past 40 MB here, and each commit ran a
 * checkpoint with a sync of the database file); the checkpoint holds this
 * process's writers back until it is done.  Its high-water mark is
 * 4.5 MB on an idle machine (5-7 MB before the checkpoint counted the
 * frames that land while it copies, see below), and was up to ~9 MB with
 * the rest of the suite (or two busy loops) beside it: these autocommit
 * writers do not queue on the process's write mutex, so a checkpoint can
 * give up on its ~2 ms wait for them, and the next tries 250 frames later.
 * Bounded, well under the 40 MB. */
TEST(wal_stays_bounded_with_concurrent_writers)
{
  long long size;

  wal_after_writers("walc.db", 0, &size);
  ASSERT(size >= 0);
  fprintf(stderr, "  the WAL is %lld bytes after 4 x 1500 concurrent commits\n", size);
  ASSERT(size <= 14 * 1024 * 1024);
}

/* The same with transactions, as submissions commit, which queue behind
 * the checkpoint's RESTART step (they wait for the process's write mutex
 * it holds), so that nothing can make it give up here: the WAL starts
 * again at every checkpoint, and its file (a high-water mark: SQLite
 * reuses it, and the ledger keeps 64-128 frames of room ahead) stays near
 * 1,000 frames (4.5 MB).  Commits land while the passive step copies, and
 * when only the frames it found decided whether the RESTART step ran, it
 * seldom did: the WAL grew to 1,250-2,500 frames, each commit past 1,000
 * ran a checkpoint with a database sync of its own, and this test saw
 * 6.5-8.5 MB. */
TEST(checkpoints_restart_the_wal_under_concurrent_transactions)
{
  long long size;

  wal_after_writers("walt.db", 1, &size);
  ASSERT(size >= 0);
  fprintf(stderr, "  the WAL is %lld bytes after 4 x 4000 concurrent transactions\n", size);
  ASSERT(size <= (1000 + 250 + 128) * (4096 + 24) + 64 * 1024);
}

/* A reader that keeps an old snapshot (here another program's open read
 * transaction) holds the checkpoint back: it gives up after a few ms and
 * tries again some frames later, rather than hold every writer of the
 * process for the busy handler's 10 s. */
TEST(a_lingering_reader_does_not_stall_writers)
{
  char url[600], path[600];
  struct ledger *l;
  sqlite3 *rd = NULL;
  sqlite3_stmt *st = NULL;
  long long t0;

  snprintf(url, sizeof url, "sqlite://%s/rd.db", g_dir);
  snprintf(path, sizeof path, "%s/rd.db", g_dir);
  ASSERT((l = tu_ledger_open(url)));
  ASSERT_EQ(l->ops->kv_set(l, "rd.x", "0"), ERR_OK);
  ASSERT_EQ(sqlite3_open(path, &rd), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(rd, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  ASSERT_EQ(sqlite3_prepare_v2(rd, "SELECT count(*) FROM kv", -1, &st, NULL), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);   /* the snapshot is held */
  t0 = tu_now_ms();
  for (int i = 0; i < 2500; i++) {
    char v[32];
    snprintf(v, sizeof v, "%d", i);
    ASSERT_EQ(l->ops->kv_set(l, i % 2 ? "rd.a" : "rd.b", v), ERR_OK);
  }
  long long took = tu_now_ms() - t0;
  sqlite3_finalize(st);
  sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL);
  sqlite3_close(rd);
  ledger_close(l);
  fprintf(stderr, "  2500 commits beside a reader's old snapshot: %lld ms\n", took);
  ASSERT(took < 8000);
}

/* The WAL keeps written room ahead of its frames (a commit then overwrites
 * rather than appends), and a process that dies with frames followed by
 * that room loses none of them: the next open recovers every commit. */
TEST(wal_room_survives_a_crash)
{
  static unsigned char tail[32 * (4096 + 24)];   /* 32 frames' worth */
  char url[600], wal[600];
  struct stat st;
  struct ledger *l;
  pid_t pid;
  int status = -1, found = 0;
  FILE *f;

  snprintf(url, sizeof url, "sqlite://%s/room.db", g_dir);
  snprintf(wal, sizeof wal, "%s/room.db-wal", g_dir);
  if ((pid = fork()) == 0) {
    static struct ledger *c;   /* static: still reachable for valgrind at _exit */
    c = tu_ledger_open(url);
    for (int i = 0; c && i < 40; i++) {
      char k[32], v[32];
      snprintf(k, sizeof k, "room.%d", i);
      snprintf(v, sizeof v, "%d", i * 7);
      if (c->ops->kv_set(c, k, v))
        _exit(2);
    }
    _exit(c ? 0 : 3);   /* no close: the WAL stays as a crash leaves it */
  }
  ASSERT(pid > 0);
  waitpid(pid, &status, 0);
  ASSERT_EQ(status, 0);
  /* Room: the last 32 frames' worth of the file are still zeros. */
  ASSERT_EQ(stat(wal, &st), 0);
  fprintf(stderr, "  the WAL is %lld bytes\n", (long long)st.st_size);
  ASSERT(st.st_size > (off_t)sizeof tail);
  ASSERT((f = fopen(wal, "rb")));
  int read_ok = fseeko(f, st.st_size - (off_t)sizeof tail, SEEK_SET) == 0 &&
                fread(tail, 1, sizeof tail, f) == sizeof tail;
  fclose(f);
  ASSERT(read_ok);
  for (size_t i = 0; i < sizeof tail; i++)
    ASSERT_EQ(tail[i], 0);
  ASSERT((l = tu_ledger_open(url)));
  for (int i = 0; i < 40; i++) {
    char k[32], want[32], *v = NULL;
    snprintf(k, sizeof k, "room.%d", i);
    snprintf(want, sizeof want, "%d", i * 7);
    found += l->ops->kv_get(l, k, &v) == ERR_OK && v && strcmp(v, want) == 0;
    free(v);
  }
  ledger_close(l);
  ASSERT_EQ(found, 40);
}

/* A ledger made by an earlier skynet (schema 5, AUTOINCREMENT ids) with
 * jobs, transitions, steps and notices in it: migration 6 makes the ids
 * plain rowids and keeps every row, the foreign keys, and the next id. */
TEST(plain_rowids_migration_keeps_everything)
{
  char path[600], url[620];
  struct transition *t;
  struct job_step_rec *st;
  struct ledger *l;
  struct job j = {0};
  sqlite3 *db;
  size_t n;
  int v = 0;

  snprintf(path, sizeof path, "%s/old.db", g_dir);
  snprintf(url, sizeof url, "sqlite://%s", path);
  ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
  for (const struct migration *m = migrations_sqlite; m->name && m->version <= 5; m++)
    ASSERT_EQ(sqlite3_exec(db, m->sql, NULL, NULL, NULL), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=5; PRAGMA foreign_keys=ON;"
                         "INSERT INTO jobs(channel, chat_id, user_id, text, state, created_at,"
                         " updated_at) VALUES ('c', 1, 1, 'first', 'SUCCEEDED', 1, 2),"
                         " ('c', 1, 1, 'second', 'QUEUED', 3, 4);"
                         "DELETE FROM jobs WHERE id = 2;"   /* AUTOINCREMENT remembers 2 */
                         "INSERT INTO jobs(channel, chat_id, user_id, text, state, created_at,"
                         " updated_at) VALUES ('c', 1, 1, 'third', 'QUEUED', 5, 6);"
                         "INSERT INTO transitions(job_id, to_state, actor, at) VALUES"
                         " (1, 'CREATED', 't', 1), (3, 'CREATED', 't', 5);"
                         "INSERT INTO steps(job_id, idx, state) VALUES (1, 0, 'SUCCEEDED');"
                         "INSERT INTO outbox(channel, chat_id, text, created_at) VALUES"
                         " ('c', 1, 'done', 2);", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  ASSERT((l = tu_ledger_open(url)));
  ASSERT_EQ(l->ops->schema_version(l, &v), ERR_OK);
  ASSERT(v >= 6);
  ASSERT_EQ(l->ops->job_get(l, 3, &j), ERR_OK);
  ASSERT_STREQ(j.text, "third");
  job_release(&j);
  ASSERT_EQ(l->ops->job_get(l, 2, &j), ERR_NOTFOUND);
  ASSERT_EQ(l->ops->job_transitions(l, 1, &t, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  transition_list_free(t, n);
  ASSERT_EQ(l->ops->step_list(l, 1, &st, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  job_step_list_free(st, n);
  memset(&j, 0, sizeof j);
  j.channel = "c";
  j.text = "fourth";
  ASSERT_EQ(l->ops->job_create(l, &j, "t"), ERR_OK);
  ASSERT_EQ(j.id, 4);
  /* the foreign keys still hold */
  ASSERT(l->ops->job_log_put(l, 99, "x\n") != ERR_OK);
  ledger_close(l);
  ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_stmt *q;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM sqlite_sequence WHERE name IN"
                               " ('jobs', 'transitions', 'outbox')), (SELECT count(*) FROM"
                               " outbox), (SELECT sql FROM sqlite_master WHERE name = 'jobs')",
                               -1, &q, NULL), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  ASSERT_EQ(sqlite3_column_int(q, 0), 0);
  ASSERT_EQ(sqlite3_column_int(q, 1), 1);
  ASSERT(strstr((const char *)sqlite3_column_text(q, 2), "AUTOINCREMENT") == NULL);
  sqlite3_finalize(q);
  sqlite3_close(db);
}

int main(void)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");

  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_url, sizeof g_url, "sqlite://%s/ledger.db", g_dir);
  fprintf(stderr, "-- sqlite\n");
  run_suite();
  RUN(wal_stays_bounded);
  RUN(wal_stays_bounded_with_concurrent_writers);
  RUN(checkpoints_restart_the_wal_under_concurrent_transactions);
  RUN(a_lingering_reader_does_not_stall_writers);
  RUN(wal_room_survives_a_crash);
  RUN(plain_rowids_migration_keeps_everything);
  tu_rmrf(g_dir);
  if (pg && *pg) {
    fprintf(stderr, "-- postgresql\n");
    if (tpg_schema_url(pg, "ledger_suite", g_url, sizeof g_url) == 0)
      run_suite();
    else
      test_failed_++;
    tpg_schema_drop(pg, "ledger_suite");
  } else if (tpg_missing_is_failure("ledger suite on postgresql")) {
    test_failed_++;
  }
  return test_summary();
}
