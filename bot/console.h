/* bot/console.h — the console channel: chat on the terminal (or a pipe).
 *
 * Reads one message a line from standard input as the console operator
 * (always allowed, an admin), feeds the conversation manager, and prints the
 * outbox of channel "console" to standard output.  Runs on the calling
 * thread until *stop is set, or standard input ends and no job of the
 * console is still queued or running. */
#ifndef SKYNET_CONSOLE_H
#define SKYNET_CONSOLE_H

#include <signal.h>

#include "conv.h"

int console_run(struct conv *c, struct ledger *l, volatile sig_atomic_t *stop);

#endif
