/* tests/e2e/fakebot.h — a fake Telegram Bot API server for the tests.
 *
 * A listening socket on 127.0.0.1 (port 0), one thread per connection, a
 * minimal HTTP/1.1 parser with keep-alive.  Serves getMe, getUpdates (from a
 * scripted queue), sendMessage, editMessageText, answerCallbackQuery,
 * setMyCommands, sendChatAction, sendDocument; records every request; injects
 * faults (429 with retry_after, 500, a dropped connection mid-response,
 * malformed JSON, 404 "Not Found" for an unsupported method).
 *
 * getUpdates behaves like Telegram's: with updates at or after `offset` it
 * answers at once with up to `limit` (≤ 100) of them; otherwise it HOLDS the
 * request until an update is pushed or `timeout` seconds pass.  Set `instant`
 * to play a server that answers an empty list at once (the busy-loop test).
 *
 * Optional modes: `gen_total` synthesises that many /help updates (users
 * gen_user0 + i % gen_users) instead of the queue, for the throughput
 * benchmark; `enforce` answers 429 with retry_after when a send breaks
 * Telegram's limits (1/s per private chat, 20/min per group, 30/s overall). */
#ifndef SKYNET_TEST_FAKEBOT_H
#define SKYNET_TEST_FAKEBOT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "../fakehttp.h"

#define FK_TOKEN "123:abc"
#define FK_MAX 4096

enum fk_fault {
  FK_NONE, FK_429, FK_500, FK_DROP, FK_GARBAGE, FK_404, FK_HALF,
  FK_400_ENTITIES,       /* 400 "can't parse entities" (only for a parse_mode request) */
  FK_403,                /* 403 "bot was blocked by the user" */
};

struct fk_rec {
  char method[40];
  char *body;
  long long at;          /* ms, monotonic */
  long long at_us;       /* µs, monotonic */
  enum fk_fault fault;
};

#define FK_CHATS 4096
struct fk_chat {
  long long id;
  long long sent[20];    /* ring of the last send times (ms) */
  int n;
};

struct fk {
  struct fh_server http;
  int port;
  pthread_t th;
  pthread_mutex_t mu;
  char *updates[FK_MAX];
  long long update_ids[FK_MAX];
  size_t n_updates;
  long long next_update;
  struct fk_rec recs[FK_MAX * 4];
  size_t n_recs;
  char fault_method[40];
  enum fk_fault fault;
  int fault_count;
  int retry_after;
  long long msg_id;
  int stop;
  pthread_cond_t cv;     /* an update was pushed */
  int instant;           /* getUpdates answers an empty list at once */
  char unsupported[8][40];   /* methods answered 404 "Not Found" */
  /* throughput mode */
  long long gen_total, gen_user0, gen_users;
  long long gen_first_us, gen_last_us;   /* first batch served, end offset seen */
  /* limit-enforcing mode */
  int enforce;
  long long global_sent[30];
  int n_global;
  struct fk_chat chats[FK_CHATS];
  long long n_429, n_sent;
};

static inline long long fk_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline long long fk_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Head and body in one write: two small writes would meet Nagle's algorithm
 * and the peer's delayed ACK (40 ms), which no real server adds. */
static void fk_reply(int fd, int status, const char *body)
{
  size_t bl = strlen(body), cap = bl + 256;
  char *out = malloc(cap);
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Connection: keep-alive\r\n\r\n", status, bl);
  memcpy(out + n, body, bl);
  if (send(fd, out, (size_t)n + bl, MSG_NOSIGNAL) < 0)
    n = -1;
  free(out);
}

static long long fk_req_int(json_object *req, const char *k, long long def)
{
  json_object *v;

  if (req && json_object_object_get_ex(req, k, &v) && json_object_is_type(v, json_type_int))
    return json_object_get_int64(v);
  return def;
}

/* The queued updates at or after offset, at most limit; NULL if none
 * (caller holds mu). */
static char *fk_updates(struct fk *f, long long offset, long long limit)
{
  size_t cap = 64, len, k = 0;
  char *out;

  for (size_t i = 0; i < f->n_updates; i++)
    if (f->update_ids[i] >= offset)
      cap += strlen(f->updates[i]) + 1;
  if (cap == 64)
    return NULL;
  out = malloc(cap);
  len = (size_t)snprintf(out, cap, "{\"ok\":true,\"result\":[");
  for (size_t i = 0; i < f->n_updates && (long long)k < limit; i++) {
    if (f->update_ids[i] < offset)
      continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s", k++ ? "," : "", f->updates[i]);
  }
  snprintf(out + len, cap - len, "]}");
  return out;
}

/* Throughput mode: synthetic /help updates 1000 .. 1000+gen_total-1. */
static char *fk_gen_updates(struct fk *f, long long offset, long long limit)
{
  long long from = offset > 1000 ? offset : 1000, end = 1000 + f->gen_total;
  size_t cap = (size_t)limit * 300 + 64, len;
  char *out;

  if (from >= end) {
    if (!f->gen_last_us)
      f->gen_last_us = fk_us();
    return NULL;
  }
  if (!f->gen_first_us)
    f->gen_first_us = fk_us();
  out = malloc(cap);
  len = (size_t)snprintf(out, cap, "{\"ok\":true,\"result\":[");
  for (long long id = from; id < end && id < from + limit; id++) {
    long long u = f->gen_user0 + id % f->gen_users;
    len += (size_t)snprintf(out + len, cap - len,
        "%s{\"update_id\":%lld,\"message\":{\"message_id\":%lld,\"from\":{\"id\":%lld,"
        "\"is_bot\":false,\"first_name\":\"T\"},\"chat\":{\"id\":%lld,\"type\":\"private\"},"
        "\"date\":0,\"text\":\"/help\"}}", id > from ? "," : "", id, id, u, u);
  }
  snprintf(out + len, cap - len, "]}");
  return out;
}

/* getUpdates: answers at once when there is something, else holds the
 * request until a push or the request's timeout (caller holds mu; returns
 * with it released). */
static void fk_get_updates(struct fk *f, int fd, const char *body)
{
  json_object *req = json_tokener_parse(body);
  long long offset = fk_req_int(req, "offset", 0), timeout = fk_req_int(req, "timeout", 0);
  long long limit = fk_req_int(req, "limit", 100);
  struct timespec dl;
  char *u;

  if (req)
    json_object_put(req);
  if (limit < 1 || limit > 100)
    limit = 100;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout > 0 ? (time_t)timeout : 0;
  for (;;) {
    u = f->gen_total ? fk_gen_updates(f, offset, limit) : fk_updates(f, offset, limit);
    if (u || f->instant || f->stop || timeout <= 0)
      break;
    if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT) {
      u = f->gen_total ? fk_gen_updates(f, offset, limit) : fk_updates(f, offset, limit);
      break;
    }
  }
  pthread_mutex_unlock(&f->mu);
  fk_reply(fd, 200, u ? u : "{\"ok\":true,\"result\":[]}");
  free(u);
}

/* Limit-enforcing mode: 1 when a send to chat now breaks a limit (caller
 * holds mu); sets *retry to the seconds to wait. */
static int fk_over_limit(struct fk *f, const char *body, int *retry)
{
  json_object *req = json_tokener_parse(body);
  long long chat = fk_req_int(req, "chat_id", 0), now = fk_ms();
  struct fk_chat *c = &f->chats[(unsigned long long)chat % FK_CHATS];

  if (req)
    json_object_put(req);
  if (c->id != chat) {
    memset(c, 0, sizeof *c);
    c->id = chat;
  }
  *retry = 1;
  /* the ring holds the last 30 sends; the oldest is at n_global % 30 */
  if (f->n_global >= 30 && f->global_sent[f->n_global % 30] > now - 1000)
    return 1;
  if (chat > 0 && c->n > 0 && c->sent[(c->n - 1) % 20] > now - 1000)
    return 1;
  if (chat < 0 && c->n >= 20 && c->sent[c->n % 20] > now - 60000) {
    *retry = (int)((c->sent[c->n % 20] + 60000 - now) / 1000) + 1;
    return 1;
  }
  c->sent[c->n++ % 20] = now;
  if (c->n >= 40)
    c->n -= 20;
  f->global_sent[f->n_global++ % 30] = now;
  if (f->n_global >= 60)
    f->n_global -= 30;
  return 0;
}

/* Answers one request; returns 0 to drop the connection. */
static int fk_serve(struct fk *f, int fd, const char *path, const char *body)
{
  const char *m = strrchr(path, '/');
  char method[40], out[1024];
  enum fk_fault fault = FK_NONE;
  struct fk_rec *r;

  snprintf(method, sizeof method, "%s", m ? m + 1 : "");
  if (strncmp(path, "/bot" FK_TOKEN "/", strlen("/bot" FK_TOKEN "/")) != 0) {
    fk_reply(fd, 401, "{\"ok\":false,\"error_code\":401,\"description\":\"Unauthorized\"}");
    return 1;
  }
  pthread_mutex_lock(&f->mu);
  if (f->fault_count > 0 && strcmp(method, f->fault_method) == 0 &&
      (f->fault != FK_400_ENTITIES || strstr(body, "\"parse_mode\""))) {
    fault = f->fault;
    f->fault_count--;
  }
  for (size_t i = 0; i < sizeof f->unsupported / sizeof f->unsupported[0]; i++)
    if (f->unsupported[i][0] && strcmp(method, f->unsupported[i]) == 0)
      fault = FK_404;
  if (fault == FK_NONE && f->enforce &&
      (strcmp(method, "sendMessage") == 0 || strcmp(method, "editMessageText") == 0)) {
    int retry;
    if (fk_over_limit(f, body, &retry)) {
      fault = FK_429;
      f->retry_after = retry;
      f->n_429++;
    } else {
      f->n_sent++;
    }
  }
  if (f->n_recs < sizeof f->recs / sizeof f->recs[0] &&
      !(f->gen_total && strcmp(method, "getUpdates") == 0)) {
    r = &f->recs[f->n_recs++];
    snprintf(r->method, sizeof r->method, "%s", method);
    r->body = strdup(body);
    r->at_us = fk_us();
    r->at = r->at_us / 1000;
    r->fault = fault;
  }
  if (fault == FK_NONE && strcmp(method, "getUpdates") == 0) {
    fk_get_updates(f, fd, body);
    return 1;
  }
  f->msg_id++;
  snprintf(out, sizeof out, "{\"ok\":true,\"result\":{\"message_id\":%lld,\"date\":0,"
           "\"chat\":{\"id\":1,\"type\":\"private\"}}}", f->msg_id);
  if (strcmp(method, "getMe") == 0)
    snprintf(out, sizeof out, "{\"ok\":true,\"result\":{\"id\":123,\"is_bot\":true,"
             "\"first_name\":\"Skynet\",\"username\":\"skynet_test_bot\"}}");
  else if (strcmp(method, "answerCallbackQuery") == 0 || strcmp(method, "setMyCommands") == 0 ||
           strcmp(method, "sendChatAction") == 0)
    snprintf(out, sizeof out, "{\"ok\":true,\"result\":true}");
  pthread_mutex_unlock(&f->mu);
  switch (fault) {
  case FK_429:
    snprintf(out, sizeof out, "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many "
             "Requests: retry after %d\",\"parameters\":{\"retry_after\":%d}}",
             f->retry_after, f->retry_after);
    fk_reply(fd, 429, out);
    return 1;
  case FK_500:
    fk_reply(fd, 500, "{\"ok\":false,\"error_code\":500,\"description\":\"Internal Server Error\"}");
    return 1;
  case FK_DROP:
    return 0;
  case FK_HALF:    /* headers and half the body, then the connection drops */
    snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: 200\r\n\r\n{\"ok\":true,\"result\":[");
    if (send(fd, out, strlen(out), MSG_NOSIGNAL) < 0)
      return 0;
    return 0;
  case FK_400_ENTITIES:
    fk_reply(fd, 400, "{\"ok\":false,\"error_code\":400,\"description\":\"Bad Request: can't "
             "parse entities: Unsupported start tag \\\"b\\\" at byte offset 0\"}");
    return 1;
  case FK_403:
    fk_reply(fd, 403, "{\"ok\":false,\"error_code\":403,\"description\":\"Forbidden: bot was "
             "blocked by the user\"}");
    return 1;
  case FK_404:
    fk_reply(fd, 404, "{\"ok\":false,\"error_code\":404,\"description\":\"Not Found\"}");
    return 1;
  case FK_GARBAGE:
    fk_reply(fd, 200, "{\"ok\":tru");
    return 1;
  default:
    fk_reply(fd, 200, out);
    return 1;
  }
}

static int fk_serve_http(void *ud, int fd, const struct fh_request *rq)
{
  return fk_serve(ud, fd, rq->path, rq->body);
}

static inline int fk_start(struct fk *f)
{
  pthread_condattr_t ca;

  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&f->cv, &ca);
  pthread_condattr_destroy(&ca);
  f->next_update = 1000;
  if (fh_start(&f->http, fk_serve_http, f, 1 << 20))
    return -1;
  f->port = f->http.port;
  return 0;
}

/* Queues an update: rest is the JSON after "update_id":N, ; returns N. */
static inline long long fk_push(struct fk *f, const char *rest)
{
  char *s;
  size_t n = strlen(rest) + 64;
  long long id;

  pthread_mutex_lock(&f->mu);
  id = f->next_update++;
  s = malloc(n);
  snprintf(s, n, "{\"update_id\":%lld%s%s}", id, *rest ? "," : "", rest);
  f->updates[f->n_updates] = s;
  f->update_ids[f->n_updates++] = id;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  return id;
}

static inline long long fk_msg(struct fk *f, long long user, long long chat, const char *text)
{
  char rest[2048];
  snprintf(rest, sizeof rest, "\"message\":{\"message_id\":1,\"from\":{\"id\":%lld,\"is_bot\":false,"
           "\"first_name\":\"T\",\"username\":\"u%lld\"},\"chat\":{\"id\":%lld,\"type\":\"%s\"},"
           "\"date\":0,\"text\":\"%s\"}", user, user, chat, chat < 0 ? "group" : "private", text);
  return fk_push(f, rest);
}

static inline long long fk_button(struct fk *f, long long user, long long chat, const char *data)
{
  char rest[1024];
  snprintf(rest, sizeof rest, "\"callback_query\":{\"id\":\"cb%lld\",\"from\":{\"id\":%lld,"
           "\"is_bot\":false,\"first_name\":\"T\"},\"message\":{\"message_id\":7,\"date\":0,"
           "\"chat\":{\"id\":%lld,\"type\":\"private\"}},\"chat_instance\":\"x\",\"data\":\"%s\"}",
           f->next_update, user, chat, data);
  return fk_push(f, rest);
}

/* Every method is supported again. */
static inline void fk_supported_all(struct fk *f)
{
  pthread_mutex_lock(&f->mu);
  memset(f->unsupported, 0, sizeof f->unsupported);
  pthread_mutex_unlock(&f->mu);
}

/* Answers method with 404 "Not Found" from now on, like a server that lacks it. */
static inline void fk_unsupported(struct fk *f, const char *method)
{
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < sizeof f->unsupported / sizeof f->unsupported[0]; i++)
    if (!f->unsupported[i][0]) {
      snprintf(f->unsupported[i], sizeof f->unsupported[i], "%s", method);
      break;
    }
  pthread_mutex_unlock(&f->mu);
}

static inline void fk_fault(struct fk *f, const char *method, enum fk_fault k, int count,
                            int retry_after)
{
  pthread_mutex_lock(&f->mu);
  snprintf(f->fault_method, sizeof f->fault_method, "%s", method);
  f->fault = k;
  f->fault_count = count;
  f->retry_after = retry_after;
  pthread_mutex_unlock(&f->mu);
}

/* Index of the first record at or after `from` with method (NULL = any) whose
 * body holds every needle (NULL-ended); -1 if none. */
static inline long fk_find(struct fk *f, size_t from, const char *method, const char *n1,
                           const char *n2)
{
  long hit = -1;

  pthread_mutex_lock(&f->mu);
  for (size_t i = from; i < f->n_recs && hit < 0; i++) {
    struct fk_rec *r = &f->recs[i];
    if (method && strcmp(r->method, method) != 0)
      continue;
    if ((n1 && !strstr(r->body, n1)) || (n2 && !strstr(r->body, n2)))
      continue;
    hit = (long)i;
  }
  pthread_mutex_unlock(&f->mu);
  return hit;
}

static inline long fk_wait(struct fk *f, size_t from, const char *method, const char *n1,
                           const char *n2, int ms)
{
  long long until = fk_ms() + ms;
  long hit;

  while ((hit = fk_find(f, from, method, n1, n2)) < 0 && fk_ms() < until)
    usleep(20 * 1000);
  if (hit < 0)
    fprintf(stderr, "fake bot: no %s with \"%s\" \"%s\" after %zu\n", method ? method : "*",
            n1 ? n1 : "", n2 ? n2 : "", from);
  return hit;
}

static inline int fk_count(struct fk *f, size_t from, const char *method, const char *n1,
                           const char *n2)
{
  int n = 0;
  long i = (long)from - 1;

  while ((i = fk_find(f, (size_t)(i + 1), method, n1, n2)) >= 0)
    n++;
  return n;
}

/* Requests after `from` of method to a chat that were answered without a fault. */
static inline int fk_count_ok(struct fk *f, size_t from, const char *method, const char *n1)
{
  int n = 0;

  pthread_mutex_lock(&f->mu);
  for (size_t i = from; i < f->n_recs; i++)
    n += strcmp(f->recs[i].method, method) == 0 && strstr(f->recs[i].body, n1) &&
         f->recs[i].fault == FK_NONE;
  pthread_mutex_unlock(&f->mu);
  return n;
}

static inline size_t fk_mark(struct fk *f)
{
  size_t n;
  pthread_mutex_lock(&f->mu);
  n = f->n_recs;
  pthread_mutex_unlock(&f->mu);
  return n;
}

#endif
