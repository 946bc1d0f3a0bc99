/* engine/persona.h — SKYNET's voice as data.
 *
 * A persona (persona/<name>.yaml) is a name, a tone, the system prompt the
 * model gets, and a template for every message SKYNET sends.  Templates fill
 * {{placeholders}}; each template may use only the placeholders the table in
 * persona.c lists for it, so a typo is caught at load time, not in chat.
 *
 * Lookup of `persona:` (config): a value with a '/' or ending in .yaml is a
 * file path; else $SKYNET_HOME/persona/<name>.yaml, then the installed
 * share/skynet/persona/<name>.yaml, then the personas compiled into the
 * binary (skynet, example) — so an installed skynet needs no file beside it.
 *
 * Thread contract: a loaded persona is read-only and shared by every thread;
 * persona_current() is set once at startup (before threads start). */
#ifndef SKYNET_PERSONA_H
#define SKYNET_PERSONA_H

#include <stdarg.h>
#include <stddef.h>

#include "err.h"

struct persona;

/* Loads a persona; on failure ERR_CONFIG with a message naming the file and
 * the key ("persona 'x.yaml': templates.plan: unknown placeholder {{foo}}"). */
enum err persona_load(const char *name_or_path, const char *home, struct persona **out,
                      char *why, size_t n);
/* From YAML text (origin names it in errors). */
enum err persona_parse(const char *yaml, size_t len, const char *origin,
                       struct persona **out, char *why, size_t n);
void persona_free(struct persona *p);

const char *persona_name(const struct persona *p);
const char *persona_tone(const struct persona *p);
const char *persona_system(const struct persona *p);

/* Renders template `key` with name/value pairs, NULL-terminated:
 *   persona_render(p, "plan", "id", "4", "risk", "WRITE", NULL)
 * {{name}} is always available.  Placeholders not given render empty.
 * malloc'd; never NULL unless out of memory.  An unknown key renders the key
 * itself, so a programming error shows instead of crashing. */
char *persona_render(const struct persona *p, const char *key, ...)
    __attribute__((sentinel));

char *persona_vrender(const struct persona *p, const char *key, va_list ap);

/* The process-wide persona: the one set, else the built-in SKYNET. */
const struct persona *persona_current(void);
/* Sets it (takes ownership; the previous one is freed).  Startup only. */
void persona_set_current(struct persona *p);

/* Template keys and the placeholders each allows, for docs and tests. */
struct persona_template_def {
  const char *key;
  const char *vars;    /* comma separated */
};
const struct persona_template_def *persona_template_defs(size_t *n);

#endif
