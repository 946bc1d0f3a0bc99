/* engine/log.h — levelled logging as text or JSON lines, with secret redaction.
 *
 * Thread-safe: any thread may log; lines are written whole under one mutex.
 * Every registered secret is replaced by "[REDACTED]" in every line before it
 * is written, whatever the caller passed in. */
#ifndef SKYNET_LOG_H
#define SKYNET_LOG_H

#include <stdio.h>

enum log_level { LOGL_DEBUG, LOGL_INFO, LOGL_WARN, LOGL_ERROR };

/* Sets the level, the format (json > 0 for JSON lines, 0 for text, < 0 for
 * auto: text when the stream is a terminal, JSON otherwise, as cfg.log_json)
 * and the stream (NULL = stderr).  Call before threads start; may be called
 * again on reload. */
void log_setup(enum log_level level, int json, FILE *out);
/* Parses "debug", "info", "warn"/"warning", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Registers a secret (copied) to redact; strings shorter than 4 bytes are
 * ignored so that redaction cannot eat ordinary text. */
void log_add_secret(const char *secret);
/* Forgets every registered secret (tests, reload). */
void log_clear_secrets(void);
/* Returns a malloc'd copy of s with every registered secret redacted (NULL
 * if s is NULL or memory ran out).  Any thread. */
char *log_redact(const char *s);

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) log_msg(LOGL_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...) log_msg(LOGL_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_msg(LOGL_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_msg(LOGL_ERROR, mod, __VA_ARGS__)

#endif
