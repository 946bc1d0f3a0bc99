/* bot/telegram.h — the Telegram channel (SPEC §3, issue 3).
 *
 * A Bot API client on engine/http.h + json-c, a long-polling loop that feeds the
 * conversation manager with exactly-once semantics (an update's effects and
 * the new offset are committed in one ledger transaction), and a sender
 * thread that drains the "telegram" outbox within Telegram's limits.
 *
 * Thread contract: tg_run() runs the poller on the calling thread with the
 * caller's conv and ledger; it starts the sender thread, which opens its own
 * ledger connection and its own HTTP handle. */
#ifndef SKYNET_TELEGRAM_H
#define SKYNET_TELEGRAM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "bot/conv.h"
#include "engine/config.h"
#include "engine/err.h"

enum tg_kind { TG_UPD_NONE, TG_UPD_MESSAGE, TG_UPD_CALLBACK };

/* One parsed update.  Strings point into the json object it came from. */
struct tg_update {
  int64_t update_id;
  enum tg_kind kind;
  int64_t chat_id;
  int64_t user_id;
  const char *user_name;     /* may be NULL */
  const char *text;          /* message text */
  const char *data;          /* callback data */
  const char *callback_id;   /* callback query id */
};

/* Parses one element of getUpdates' result.  ERR_PARSE when it lacks an
 * update_id; ERR_UNSUPPORTED for a kind the bot ignores (u->update_id is
 * still set so that the offset can move past it). */
enum err tg_update_parse(json_object *o, struct tg_update *u);

/* Escapes &, < and > for parse_mode HTML; malloc'd, NULL when out of memory.
 * Invalid UTF-8 bytes become '?'. */
char *tg_html_escape(const char *s, size_t n);
/* Length of the longest prefix of s[0..n) of at most max bytes that ends on
 * a UTF-8 boundary, preferring a newline in its last quarter. */
size_t tg_split_len(const char *s, size_t n, size_t max);

struct tg;

/* Checks the token with getMe.  A bad token or unreachable server is an
 * error written to errbuf (the token is never in it). */
enum err tg_open(const struct cfg *cfg, struct tg **out, char *errbuf, size_t errlen);
/* tg_open in two halves, so that start-up can do other work during getMe:
 * begin starts getMe on a thread of its own (ERR_NOMEM only); end waits for
 * it and returns what tg_open would (the caller then tg_free()s t on an
 * error).  Nothing may use t in between but tg_open_end and tg_free.  Both
 * from the thread that owns t. */
enum err tg_open_begin(const struct cfg *cfg, struct tg **out);
enum err tg_open_end(struct tg *t, char *errbuf, size_t errlen);
/* After tg_open_end, from the same thread: has the getMe thread send the
 * first getUpdates (from the offset stored in l), so that it is under way
 * while the rest of skynet starts; tg_run takes its answer.  Nothing
 * is confirmed to Telegram before tg_run has handled it. */
void tg_poll_ahead(struct tg *t, struct ledger *l, volatile sig_atomic_t *stop);
/* The same from offset 0, for a database that does not exist yet (so holds
 * no offset): any time before tg_run, even before tg_open_end, so that the
 * first poll does not wait for the new database's creation.  The poll
 * still waits for getMe to accept the token.  Updates that an earlier
 * run handled without confirming them come again, and are recognised by
 * their update_id. */
void tg_poll_first(struct tg *t, volatile sig_atomic_t *stop);
void tg_free(struct tg *t);
/* "@name (id N)" of the bot after tg_open. */
const char *tg_bot_name(const struct tg *t);
/* Polls until *stop; then flushes the outbox for at most the grace period.
 * Returns a process exit code. */
int tg_run(struct tg *t, struct conv *c, struct ledger *l, volatile sig_atomic_t *stop);

#endif
