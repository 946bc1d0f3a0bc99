/* bot/tg_pace.h — Telegram's sending limits as a clock-driven calculator.
 *
 * Limits (all configurable, telegram.rate_*): at most `global_per_s`
 * messages in any one-second window overall (bursts allowed up to that), one
 * message per 1/chat_per_s seconds to a private chat, one per
 * 60/group_per_min seconds to a group (negative chat id), and at most one
 * edit per second of any one message (by edit key), each with a safety
 * margin of a few ms.  A 429 holds a chat, and
 * everything, for exactly retry_after.  Chats are tracked in a fixed table;
 * a chat is only forgotten once its wait has passed, so collisions can make
 * the pacer stricter, never laxer.
 *
 * Thread contract: not thread-safe; the sender thread owns it.  Times are
 * milliseconds on one clock of the caller's choice. */
#ifndef SKYNET_TG_PACE_H
#define SKYNET_TG_PACE_H

#include <stdint.h>

#include "engine/err.h"

struct tg_pace;

enum err tg_pace_new(int global_per_s, int chat_per_s, int group_per_min, struct tg_pace **out);
void tg_pace_free(struct tg_pace *p);   /* NULL-safe */
/* Milliseconds until a message to chat (an edit of edit_key when not NULL)
 * may go; 0 means now. */
int64_t tg_pace_wait(const struct tg_pace *p, int64_t chat, const char *edit_key, int64_t now);
/* Milliseconds until any message at all may go (the global window, a 429). */
int64_t tg_pace_wait_any(const struct tg_pace *p, int64_t now);
/* Records a message that went out at now. */
void tg_pace_sent(struct tg_pace *p, int64_t chat, const char *edit_key, int64_t now);
/* A 429 with retry_after: nothing at all before `until`. */
void tg_pace_hold(struct tg_pace *p, int64_t chat, int64_t now, int64_t until);
/* A failing chat (5xx, network): nothing to that chat before `until`. */
void tg_pace_hold_chat(struct tg_pace *p, int64_t chat, int64_t now, int64_t until);

#endif
