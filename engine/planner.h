/* engine/planner.h — turning a request in words into plan JSON.
 *
 * The offline planner is the embedded default and the fallback of every
 * model-backed planner: it maps common requests to catalog actions with
 * keyword rules, takes a literal command line as a `shell` step, and says
 * plainly when it cannot plan something instead of guessing.  Its output goes
 * through plan_parse() like any model's.  Thread-safe. */
#ifndef SKYNET_PLANNER_H
#define SKYNET_PLANNER_H

#include "config.h"
#include "err.h"

/* Plans `text`.  On success *plan_json is malloc'd JSON in the SPEC §5 format.
 * ERR_UNSUPPORTED with a sentence in errbuf when it cannot plan offline.
 * cfg may be NULL; with it, "... on NAME" routes steps to provider NAME. */
enum err planner_offline(const struct cfg *cfg, const char *text,
                         char **plan_json, char *errbuf, size_t errlen);

#endif
