/* bot/console.c — see console.h. */
#include "console.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/buf.h"

#define LINE_MAX_BYTES (16 * 1024)
#define CONSOLE_CHAT 0

struct console {
  struct conv *conv;
  struct ledger *l;
  struct buf line;
  int overlong;               /* dropping the rest of a too-long line */
  int eof;
  int tty;
};

/* Prints every pending console notification, marks it sent. */
static void drain(struct console *k)
{
  struct outbox_msg *v = NULL;
  size_t n = 0;

  if (k->l->ops->outbox_pending(k->l, "console", ledger_now_ms(), 100, &v, &n))
    return;
  for (size_t i = 0; i < n; i++) {
    printf("skynet> %s\n", v[i].text ? v[i].text : "");
    k->l->ops->outbox_done(k->l, v[i].id);
  }
  if (n)
    fflush(stdout);
  outbox_list_free(v, n);
}

static void handle_line(struct console *k, const char *text)
{
  struct conv_in in = {0};
  struct conv_out out;

  in.channel = "console";
  in.chat_id = CONSOLE_CHAT;
  in.user_id = 0;
  in.text = text;
  in.trusted = 1;
  if (strcmp(text, "/quit") == 0 || strcmp(text, "/exit") == 0) {
    k->eof = 1;
    return;
  }
  if (conv_handle(k->conv, &in, &out))
    printf("skynet> error: the ledger failed; try again (%s)\n", k->l->errmsg);
}

/* Splits what was read into lines; overlong lines are refused whole. */
static void take_input(struct console *k, const char *data, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (data[i] == '\n') {
      if (k->overlong)
        printf("skynet> error: that line is longer than %d bytes; ignored\n", LINE_MAX_BYTES);
      else if (k->line.len)
        handle_line(k, buf_str(&k->line));
      buf_clear(&k->line);
      k->overlong = 0;
      drain(k);
    } else if (data[i] != '\r' && !k->overlong &&
               buf_append(&k->line, &data[i], 1) != ERR_OK) {
      k->overlong = 1;
    }
  }
}

static int console_jobs_active(struct console *k)
{
  struct job_filter f = {"console", CONSOLE_CHAT, 1, JOB_CREATED, 50};
  struct job *v = NULL;
  size_t n = 0;
  int active = 0;

  if (k->l->ops->job_list(k->l, &f, &v, &n))
    return 0;
  for (size_t i = 0; i < n; i++)
    active |= v[i].state == JOB_QUEUED || v[i].state == JOB_RUNNING ||
              v[i].state == JOB_APPROVED;
  job_list_free(v, n);
  return active;
}

static void read_stdin(struct console *k)
{
  char chunk[4096];
  ssize_t r = read(STDIN_FILENO, chunk, sizeof chunk);

  if (r > 0) {
    take_input(k, chunk, (size_t)r);
  } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
    if (k->line.len && !k->overlong)
      handle_line(k, buf_str(&k->line));
    buf_clear(&k->line);
    k->eof = 1;
  }
}

int console_run(struct conv *c, struct ledger *l, volatile sig_atomic_t *stop)
{
  struct console k = {c, l, BUF_INIT(LINE_MAX_BYTES), 0, 0, isatty(STDIN_FILENO)};

  if (k.tty)
    printf("SKYNET console. /help lists commands, /quit leaves.\n");
  fflush(stdout);
  while (!*stop) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    if (k.eof) {
      drain(&k);
      if (!console_jobs_active(&k))
        break;
      usleep(100 * 1000);
      continue;
    }
    if (poll(&p, 1, 100) > 0)
      read_stdin(&k);
    drain(&k);
  }
  drain(&k);
  buf_release(&k.line);
  return 0;
}
