/* engine/planner.h — turning a request in words into plan JSON.
 *
 * The offline planner is the embedded default and the fallback of every
 * model-backed planner: it maps common requests to catalog actions with
 * keyword rules, takes a literal command line as a `shell` step, and says
 * plainly when it cannot plan something instead of guessing.  Its output goes
 * through plan_parse() like any model's.  Thread-safe. */
#ifndef SKYNET_PLANNER_H
#define SKYNET_PLANNER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

/* Plans `text`.  On success *plan_json is malloc'd JSON in the SPEC §5 format.
 * ERR_UNSUPPORTED with a sentence in errbuf when it cannot plan offline.
 * cfg may be NULL; with it, "... on NAME" routes steps to provider NAME. */
enum err planner_offline(const struct cfg *cfg, const char *text,
                         char **plan_json, char *errbuf, size_t errlen);

/* ---- model-backed planning (planner_llm.c) ---- */

struct llm;
struct llm_msg;

struct planner_llm_in {
  const char *text;               /* the request (untrusted) */
  const struct llm_msg *context;  /* recent chat, oldest first (untrusted) */
  size_t n_context;
  const char *const *providers;   /* names, NULL-terminated, default first */
};

struct planner_llm_out {
  char *plan_json;                /* malloc'd: a plan that plan_parse() accepts */
  int64_t prompt_tokens;          /* every round together */
  int64_t completion_tokens;
  size_t request_bytes;           /* body of the first request */
  int rounds;                     /* 1, or 2 after a repair */
};

/* Asks the model for a plan.  ERR_OK: out->plan_json holds a valid plan
 * (still to be judged by the policy engine).  ERR_UNSUPPORTED: the model
 * says it cannot plan this (why says why); ERR_DENIED: the model refused;
 * ERR_PARSE: no valid plan after the repair round.  Any other error means the
 * model could not be asked (down, timeout, circuit open): plan offline. */
enum err planner_llm(struct llm *c, const struct planner_llm_in *in,
                     struct planner_llm_out *out, char *why, size_t n);

/* The JSON object in a model's answer: inside a code fence if there is
 * one, from the first '{' to the last '}'.  malloc'd, NULL if none. */
char *planner_json_extract(const char *text);

#endif
