/* bot/tg_pace.c — see tg_pace.h.
 *
 * DESIGN: the global limit is a sliding window: a ring of the last
 * global_per_s send times; a send may go when the oldest of them is a second
 * old.  Per chat and per edited message it is a minimum gap: the time of the
 * next allowed send, in small open-addressed tables (probe TG_PACE_PROBE
 * slots; a slot is reusable once its time has passed; when none is, the
 * newcomer waits as long as the latest of them). */
#include "tg_pace.h"

#include <stdlib.h>
#include <string.h>

#define TG_PACE_SLOTS 1024
#define TG_PACE_PROBE 8
#define TG_EDIT_GAP_MS 1000
/* Added to every window and gap: clocks of ms resolution at both ends and
 * uneven network delay can otherwise land two sends 999 ms apart at Telegram. */
#define TG_PACE_MARGIN_MS 15

struct tg_slot {
  int64_t key;
  int64_t next_ms;              /* 0: free */
};

struct tg_pace {
  int64_t chat_gap_ms, group_gap_ms;
  int64_t *ring;                /* the last `cap` global sends */
  int cap;
  uint64_t n_sent;
  int64_t hold_until;           /* a 429 for everything */
  struct tg_slot chats[TG_PACE_SLOTS];
  struct tg_slot edits[TG_PACE_SLOTS];
};

enum err tg_pace_new(int global_per_s, int chat_per_s, int group_per_min, struct tg_pace **out)
{
  struct tg_pace *p;

  *out = NULL;
  if (global_per_s < 1 || chat_per_s < 1 || group_per_min < 1)
    return ERR_INVAL;
  if (!(p = calloc(1, sizeof *p)) || !(p->ring = calloc((size_t)global_per_s, sizeof *p->ring))) {
    free(p);
    return ERR_NOMEM;
  }
  p->cap = global_per_s;
  p->chat_gap_ms = (1000 + chat_per_s - 1) / chat_per_s + TG_PACE_MARGIN_MS;
  p->group_gap_ms = (60000 + group_per_min - 1) / group_per_min + TG_PACE_MARGIN_MS;
  *out = p;
  return ERR_OK;
}

void tg_pace_free(struct tg_pace *p)
{
  if (!p)
    return;
  free(p->ring);
  free(p);
}

static uint64_t tg_hash(const char *s, int64_t chat)
{
  uint64_t h = 1469598103934665603ULL ^ (uint64_t)chat;

  while (s && *s)
    h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return h;
}

/* The slot of key, or NULL when it is not in the table. */
static const struct tg_slot *tg_find(const struct tg_slot *t, int64_t key, int64_t now,
                                     int64_t *busiest)
{
  *busiest = 0;
  for (int i = 0; i < TG_PACE_PROBE; i++) {
    const struct tg_slot *s = &t[((uint64_t)key + (uint64_t)i) % TG_PACE_SLOTS];
    if (s->next_ms > now && s->key == key)
      return s;
    if (s->next_ms > *busiest)
      *busiest = s->next_ms;
  }
  return NULL;
}

/* When key may go next: its own time, or, if every probed slot is taken by
 * a waiting key, the latest of theirs (it could not be recorded otherwise). */
static int64_t tg_next(const struct tg_slot *t, int64_t key, int64_t now)
{
  int64_t busiest;
  const struct tg_slot *s = tg_find(t, key, now, &busiest);

  if (s)
    return s->next_ms;
  for (int i = 0; i < TG_PACE_PROBE; i++)
    if (t[((uint64_t)key + (uint64_t)i) % TG_PACE_SLOTS].next_ms <= now)
      return 0;
  return busiest;
}

static void tg_set(struct tg_slot *t, int64_t key, int64_t next, int64_t now)
{
  struct tg_slot *free_slot = NULL;

  for (int i = 0; i < TG_PACE_PROBE; i++) {
    struct tg_slot *s = &t[((uint64_t)key + (uint64_t)i) % TG_PACE_SLOTS];
    if (s->next_ms > now && s->key == key) {
      if (next > s->next_ms)
        s->next_ms = next;
      return;
    }
    if (!free_slot && s->next_ms <= now)
      free_slot = s;
  }
  if (free_slot) {
    free_slot->key = key;
    free_slot->next_ms = next;
  }
}

int64_t tg_pace_wait_any(const struct tg_pace *p, int64_t now)
{
  int64_t at = p->hold_until, v;

  if (p->n_sent >= (uint64_t)p->cap &&
      (v = p->ring[p->n_sent % (uint64_t)p->cap] + 1000 + TG_PACE_MARGIN_MS) > at)
    at = v;
  return at > now ? at - now : 0;
}

int64_t tg_pace_wait(const struct tg_pace *p, int64_t chat, const char *edit_key, int64_t now)
{
  int64_t at = now + tg_pace_wait_any(p, now), v;

  if ((v = tg_next(p->chats, chat, now)) > at)
    at = v;
  if (edit_key && (v = tg_next(p->edits, (int64_t)tg_hash(edit_key, chat), now)) > at)
    at = v;
  return at > now ? at - now : 0;
}

void tg_pace_sent(struct tg_pace *p, int64_t chat, const char *edit_key, int64_t now)
{
  p->ring[p->n_sent++ % (uint64_t)p->cap] = now;
  tg_set(p->chats, chat, now + (chat < 0 ? p->group_gap_ms : p->chat_gap_ms), now);
  if (edit_key)
    tg_set(p->edits, (int64_t)tg_hash(edit_key, chat), now + TG_EDIT_GAP_MS + TG_PACE_MARGIN_MS,
           now);
}

void tg_pace_hold(struct tg_pace *p, int64_t chat, int64_t now, int64_t until)
{
  if (until > p->hold_until)
    p->hold_until = until;
  tg_pace_hold_chat(p, chat, now, until);
}

void tg_pace_hold_chat(struct tg_pace *p, int64_t chat, int64_t now, int64_t until)
{
  tg_set(p->chats, chat, until, now);
}
