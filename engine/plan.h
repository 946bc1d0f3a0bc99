/* engine/plan.h — plans: what a planner produces and the orchestrator runs.
 *
 * A plan arrives as JSON (SPEC §5) from any planner, is parsed and validated
 * here against the action catalog (known actions, argument types, bounds),
 * and each step is resolved to the concrete argv it will run.  The policy
 * engine then judges those argv; plan_assess() combines its verdict with the
 * risk the planner claimed, which can only raise it.
 *
 * Pure data; not shared between threads. */
#ifndef SKYNET_PLAN_H
#define SKYNET_PLAN_H

#include <stddef.h>

#include "err.h"
#include "job.h"

#define PLAN_MAX_STEPS 16
#define PLAN_MAX_TIMEOUT_S 86400
#define PLAN_MAX_JSON (256 * 1024)
#define PLAN_MAX_ARTIFACTS 16

struct plan_step {
  char *action;          /* a catalog action */
  char *args_json;       /* the step's args object, as given */
  char *description;
  char *provider;        /* NULL → the default provider */
  int timeout_s;         /* 0 → configured default */
  int cmd_timeout_s;     /* args.timeout_s: the command-level limit, 0 none */
  char **artifacts;      /* args.artifacts: absolute paths kept after the
                          * step succeeds, NULL-terminated, or NULL */
  size_t n_artifacts;
  char **argv;           /* concrete command, NULL-terminated */
  size_t argc;
  char *stdin_data;      /* file_write content, else NULL */
  enum risk risk;        /* from the policy engine */
  char reason[256];
  int has_idempotent;    /* the plan said "idempotent": true/false */
  int idempotent;
};

struct plan {
  char *summary;
  struct plan_step *steps;
  size_t n_steps;
  int has_claimed;
  enum risk claimed;     /* what the planner said */
  enum risk risk;        /* the decided risk: max(policy, claimed) */
  char reason[256];      /* why that risk */
};

/* Parses and validates plan JSON; resolves each step's argv.  On failure
 * returns ERR_PARSE (or ERR_INVAL/ERR_TOOBIG) with why in errbuf, e.g.
 * "step 2: unknown action 'format_disk'". */
enum err plan_parse(const char *json, size_t len, struct plan *out,
                    char *errbuf, size_t errlen);
/* Runs the policy engine over every step and decides the plan's risk. */
void plan_assess(struct plan *p);
/* The plan as JSON (malloc'd), with the decided risk. */
char *plan_to_json(const struct plan *p);
/* One line per step for chat: "1. disk_usage: df -h". malloc'd. */
char *plan_describe(const struct plan *p);
void plan_release(struct plan *p);
/* Whether running the step twice does no harm, so that interrupted work may
 * be retried: what the plan said, else read-only steps are and others not. */
int plan_step_idempotent(const struct plan_step *s);

/* The action catalog. */
struct catalog_action {
  const char *name;
  const char *summary;   /* for help and for the LLM prompt */
  const char *args;      /* argument synopsis: "path?: string" */
};
const struct catalog_action *catalog_actions(size_t *n);
const struct catalog_action *catalog_find(const char *name);

#endif
