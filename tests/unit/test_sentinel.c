/* tests/unit/test_sentinel.c — the provider monitor: thresholds, one event
 * per incident for a flapping provider, redaction, the thread. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/log.h"
#include "engine/sentinel.h"
#include "tests/harness.h"

static atomic_int healthy = 1;

static enum err flaky_health(struct exec_instance *inst, struct exec_health *out)
{
  (void)inst;
  out->ok = atomic_load(&healthy);
  snprintf(out->detail, sizeof out->detail, "%s",
           out->ok ? "fine" : "connect failed, token hunter2-secret");
  return ERR_OK;
}

static const struct exec_backend flaky = {.name = "flaky",
                                          .health = flaky_health};
static struct exec_instance flaky_inst = {&flaky, "box"};

static struct registry_entry entries[] = {
  {"box", "flaky", &flaky_inst, "", 0, 0, 0},
  {"gone", "docker", NULL, "backend 'docker' not built", 0, 0, 0},
};
static struct registry reg = {entries, 2, "box"};

static char events[64];
static char last_detail[256];

static void on_event(void *ud, const struct sentinel_event *ev)
{
  size_t n = strlen(events);

  (void)ud;
  if (n + 1 < sizeof events) {
    events[n] = ev->up ? 'U' : 'D';
    events[n + 1] = 0;
  }
  snprintf(last_detail, sizeof last_detail, "%s", ev->detail);
}

static void step(struct sentinel *s, int ok)
{
  atomic_store(&healthy, ok);
  sentinel_check_now(s);
}

TEST(flapping_one_event_per_incident)
{
  struct sentinel *s;
  struct sentinel_status st;

  events[0] = 0;
  ASSERT_EQ(sentinel_new(&s, &reg, 0, 3, on_event, NULL), ERR_OK);
  step(s, 0);
  step(s, 0);
  step(s, 1);   /* two failures, below the threshold: no incident */
  step(s, 0);
  ASSERT_STREQ(events, "");
  ASSERT_EQ(sentinel_is_up(s, "box"), 1);
  step(s, 0);
  step(s, 0);   /* third in a row */
  ASSERT_STREQ(events, "D");
  ASSERT_EQ(sentinel_is_up(s, "box"), 0);
  step(s, 0);
  step(s, 0);   /* still the same incident */
  ASSERT_STREQ(events, "D");
  ASSERT_EQ(sentinel_status(s, "box", &st), ERR_OK);
  ASSERT_EQ(st.failures, 5);
  ASSERT_CONTAINS(st.last_error, "[REDACTED]");
  ASSERT(!strstr(st.last_error, "hunter2"));
  step(s, 1);
  ASSERT_STREQ(events, "DU");
  ASSERT_EQ(sentinel_is_up(s, "box"), 1);
  step(s, 0);
  step(s, 0);
  step(s, 0);
  ASSERT_STREQ(events, "DUD");
  ASSERT_CONTAINS(last_detail, "[REDACTED]");
  sentinel_free(s);
}

TEST(unavailable_entry_down_with_reason)
{
  struct sentinel *s;
  struct sentinel_status st;

  ASSERT_EQ(sentinel_new(&s, &reg, 0, 1, NULL, NULL), ERR_OK);
  ASSERT_EQ(sentinel_status(s, "gone", &st), ERR_OK);
  ASSERT_EQ(st.up, 0);
  ASSERT_CONTAINS(st.last_error, "not built");
  ASSERT_EQ(sentinel_status(s, "nope", &st), ERR_NOTFOUND);
  sentinel_free(s);
}

TEST(thread_checks_on_interval)
{
  struct sentinel *s;
  int i;

  events[0] = 0;
  atomic_store(&healthy, 0);
  ASSERT_EQ(sentinel_new(&s, &reg, 20, 2, on_event, NULL), ERR_OK);
  for (i = 0; i < 200 && sentinel_is_up(s, "box"); i++)
    usleep(10 * 1000);
  ASSERT_EQ(sentinel_is_up(s, "box"), 0);
  atomic_store(&healthy, 1);
  for (i = 0; i < 200 && !sentinel_is_up(s, "box"); i++)
    usleep(10 * 1000);
  ASSERT_EQ(sentinel_is_up(s, "box"), 1);
  sentinel_free(s);   /* joins the thread: no event after this */
  ASSERT_STREQ(events, "DU");
}

int main(void)
{
  log_add_secret("hunter2-secret");
  RUN(flapping_one_event_per_incident);
  RUN(unavailable_entry_down_with_reason);
  RUN(thread_checks_on_interval);
  return test_summary();
}
