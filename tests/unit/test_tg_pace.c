/* Telegram pacing: the global sliding window, per-chat and per-group gaps,
 * per-message edit pacing, 429 holds, and table collisions that never make
 * the pacer laxer. */
#include "../harness.h"
#include "bot/tg_pace.h"

#define M 15      /* TG_PACE_MARGIN_MS */

TEST(global_window_allows_bursts_up_to_the_limit)
{
  struct tg_pace *p;

  ASSERT_EQ(tg_pace_new(30, 1, 20, &p), ERR_OK);
  for (int i = 0; i < 30; i++) {
    ASSERT_EQ(tg_pace_wait(p, 1000 + i, NULL, 5000), 0);
    tg_pace_sent(p, 1000 + i, NULL, 5000);
  }
  ASSERT_EQ(tg_pace_wait(p, 2000, NULL, 5000), 1000 + M);
  ASSERT_EQ(tg_pace_wait_any(p, 5000), 1000 + M);
  ASSERT_EQ(tg_pace_wait(p, 2000, NULL, 5999 + M), 1);
  ASSERT_EQ(tg_pace_wait(p, 2000, NULL, 6000 + M), 0);
  tg_pace_free(p);
}

TEST(private_and_group_gaps)
{
  struct tg_pace *p;

  ASSERT_EQ(tg_pace_new(30, 1, 20, &p), ERR_OK);
  tg_pace_sent(p, 7, NULL, 1000);
  ASSERT_EQ(tg_pace_wait(p, 7, NULL, 1000), 1000 + M);
  ASSERT_EQ(tg_pace_wait(p, 8, NULL, 1000), 0);
  ASSERT_EQ(tg_pace_wait(p, 7, NULL, 2000 + M), 0);
  tg_pace_sent(p, -100, NULL, 1000);
  ASSERT_EQ(tg_pace_wait(p, -100, NULL, 1000), 3000 + M);
  tg_pace_free(p);
  ASSERT_EQ(tg_pace_new(10, 4, 30, &p), ERR_OK);
  tg_pace_sent(p, 7, NULL, 0);
  ASSERT_EQ(tg_pace_wait(p, 7, NULL, 0), 250 + M);
  tg_pace_sent(p, -1, NULL, 0);
  ASSERT_EQ(tg_pace_wait(p, -1, NULL, 0), 2000 + M);
  tg_pace_free(p);
  ASSERT_EQ(tg_pace_new(0, 1, 1, &p), ERR_INVAL);
}

TEST(edits_of_one_message_once_per_second)
{
  struct tg_pace *p;

  ASSERT_EQ(tg_pace_new(30, 100, 6000, &p), ERR_OK);   /* chat gaps of 10 ms */
  tg_pace_sent(p, 7, "job:1:progress", 0);
  ASSERT_EQ(tg_pace_wait(p, 7, "job:1:progress", 10 + M), 990);
  ASSERT_EQ(tg_pace_wait(p, 7, "job:2:progress", 10 + M), 0);
  ASSERT_EQ(tg_pace_wait(p, 7, NULL, 10 + M), 0);
  ASSERT_EQ(tg_pace_wait(p, 8, "job:1:progress", 10 + M), 0);
  ASSERT_EQ(tg_pace_wait(p, 7, "job:1:progress", 1000 + M), 0);
  tg_pace_free(p);
}

TEST(retry_after_holds_everything)
{
  struct tg_pace *p;

  ASSERT_EQ(tg_pace_new(30, 1, 20, &p), ERR_OK);
  tg_pace_hold(p, 7, 0, 5000);
  ASSERT_EQ(tg_pace_wait(p, 7, NULL, 0), 5000);
  ASSERT_EQ(tg_pace_wait(p, 8, NULL, 0), 5000);
  tg_pace_hold_chat(p, 9, 6000, 9000);
  ASSERT_EQ(tg_pace_wait(p, 9, NULL, 6000), 3000);
  ASSERT_EQ(tg_pace_wait(p, 8, NULL, 6000), 0);
  /* a shorter hold never shortens a longer one */
  tg_pace_hold_chat(p, 9, 6000, 7000);
  ASSERT_EQ(tg_pace_wait(p, 9, NULL, 6000), 3000);
  tg_pace_free(p);
}

TEST(collisions_are_never_laxer)
{
  struct tg_pace *p;

  ASSERT_EQ(tg_pace_new(1000, 1, 20, &p), ERR_OK);
  /* chats 1024 apart share a slot; fill more than a probe run */
  for (int i = 0; i < 20; i++)
    tg_pace_sent(p, 5 + 1024LL * i, NULL, 0);
  for (int i = 0; i < 20; i++)
    ASSERT(tg_pace_wait(p, 5 + 1024LL * i, NULL, 500) > 0);
  ASSERT_EQ(tg_pace_wait(p, 5, NULL, 1000 + M), 0);
  tg_pace_free(p);
}

int main(void)
{
  RUN(global_window_allows_bursts_up_to_the_limit);
  RUN(private_and_group_gaps);
  RUN(edits_of_one_message_once_per_second);
  RUN(retry_after_holds_everything);
  RUN(collisions_are_never_laxer);
  return test_summary();
}
