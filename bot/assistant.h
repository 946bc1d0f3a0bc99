/* bot/assistant.h — the model-backed half of the conversation.
 *
 * DESIGN
 * A model takes seconds to answer; a channel must not wait for it (Telegram's
 * poller would stall every chat).  So when a model is configured, the
 * conversation manager only records the work, durably, in the same
 * transaction as the update that asked for it: a `/task` becomes a job in
 * CREATED, free text becomes a chat turn.  One assistant thread, with its own
 * ledger connection and model client, takes CREATED jobs and pending turns
 * oldest first, asks the model, and writes the outcome through the
 * orchestrator and the outbox.  A restart finds what was left and finishes
 * it, so nothing acknowledged is lost.
 *
 * The model is never required: when it is down (circuit open), over the
 * daily token budget or answers nonsense, planning falls back to the offline
 * planner and the chat is told why.  Every request's tokens are recorded per
 * chat and job in the ledger.
 *
 * Thread contract: assistant_kick() from any thread; start/stop from main. */
#ifndef SKYNET_ASSISTANT_H
#define SKYNET_ASSISTANT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/err.h"
#include "engine/ledger/ledger.h"
#include "engine/orchestrator.h"
#include "engine/registry.h"

struct assistant;

/* ERR_UNSUPPORTED when llm.provider is offline (then run without one). */
enum err assistant_start(const struct cfg *cfg, const struct registry *reg, struct orch *o,
                         struct assistant **out, char *why, size_t n);
/* Offline, at startup: plans the jobs and answers the chat turns a
 * model-backed run left behind (offline planner, canned chat), so nothing
 * waits forever after the model is switched off. */
enum err assistant_drain_offline(const struct cfg *cfg, const struct registry *reg,
                                 struct orch *o);
/* New work may be waiting. */
void assistant_kick(struct assistant *a);
/* Finishes the request in flight, then stops; frees a.  NULL-safe. */
void assistant_stop(struct assistant *a);

/* "gemini gemini-2.5-flash" */
const char *assistant_model(const struct assistant *a);

/* Start of the current UTC day, unix ms: where the daily budget counts from. */
int64_t assistant_day_start_ms(void);

#endif
