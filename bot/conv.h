/* bot/conv.h — the conversation manager every channel feeds.
 *
 * A channel turns what it receives into a struct conv_in and calls
 * conv_handle(); the manager checks who is asking, routes slash commands,
 * answers free text with the persona, and writes every reply to the outbox of
 * the channel (never to the channel itself), so replies are as durable as
 * the job they speak of.  Work goes through the orchestrator only.
 *
 * Thread contract: a struct conv belongs to the channel thread that made it
 * and uses that thread's ledger connection. */
#ifndef SKYNET_CONV_H
#define SKYNET_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/ledger/ledger.h"
#include "engine/orchestrator.h"

struct conv_in {
  const char *channel;        /* "console", "telegram" */
  int64_t chat_id;
  int64_t user_id;
  const char *user_name;      /* may be NULL */
  const char *text;           /* message text; NULL for a button press */
  const char *callback_data;  /* "approve:12", NULL for a message */
  const char *bot_name;       /* for "/task@bot_name"; may be NULL */
  int trusted;                /* the console operator: allowed and admin */
};

struct conv_out {
  char callback_answer[200];  /* short answer to a button press */
  int refused;                /* the sender is not allowed */
};

struct conv;

enum err conv_new(const struct cfg *cfg, const struct registry *reg,
                  struct orch *o, struct ledger *l, struct conv **out);
void conv_free(struct conv *c);
struct sentinel;
/* Lets /providers show the sentinel's view (health over time, last error).
 * s may be NULL; it must outlive c. */
void conv_set_sentinel(struct conv *c, struct sentinel *s);
struct assistant;
/* With an assistant, /task and free text go through the model (on the
 * assistant's thread).  a may be NULL (offline); it must outlive c. */
void conv_set_assistant(struct conv *c, struct assistant *a);
/* Handles one message or button press.  ERR_OK when handled, refusals
 * included; an error only when the ledger failed (the caller may retry). */
enum err conv_handle(struct conv *c, const struct conv_in *in, struct conv_out *out);

struct submit_res;
/* Announces a planned job in its chat, in the persona's words: the plan and
 * risk, and Approve/Deny buttons when it waits (proposal: it was offered in
 * conversation).  Outbox and chat history; any thread with its own ledger. */
enum err conv_announce(struct ledger *l, const char *channel, int64_t chat_id,
                       const struct submit_res *s, int proposal);
/* Says text in a chat (outbox and history). */
enum err conv_say(struct ledger *l, const char *channel, int64_t chat_id, const char *text);

#endif
