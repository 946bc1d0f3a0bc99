/* engine/err.h — the one error enum of SKYNET.
 *
 * Every fallible function returns enum err and hands results out through
 * pointers.  The table below generates the enum values and their messages, so
 * a new code is one line.  Thread-safe: err_str() returns static strings. */
#ifndef SKYNET_ERR_H
#define SKYNET_ERR_H

#define ERR_TABLE(X)                                  \
  X(OK, "ok")                                         \
  X(NOMEM, "out of memory")                           \
  X(INVAL, "invalid argument")                        \
  X(NOTFOUND, "not found")                            \
  X(STATE, "wrong state")                             \
  X(IO, "input/output error")                         \
  X(DB, "database error")                             \
  X(TIMEOUT, "timed out")                             \
  X(CANCELLED, "cancelled")                           \
  X(TOOBIG, "too big")                                \
  X(PARSE, "malformed input")                         \
  X(DENIED, "denied")                                 \
  X(UNSUPPORTED, "not supported")                     \
  X(BUSY, "busy")                                     \
  X(NET, "network error")                             \
  X(EXISTS, "already exists")                         \
  X(CONFIG, "configuration error")                    \
  X(UNAVAILABLE, "unavailable")

enum err {
#define ERR_ENUM(name, msg) ERR_##name,
  ERR_TABLE(ERR_ENUM)
#undef ERR_ENUM
  ERR__COUNT
};

/* Static message for an error code; never NULL. */
const char *err_str(enum err e);
/* Upper-case name ("NOTFOUND") for logs and JSON; never NULL. */
const char *err_name(enum err e);

#endif
