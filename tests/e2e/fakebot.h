/* tests/e2e/fakebot.h — a fake Telegram Bot API server for the tests.
 *
 * A listening socket on 127.0.0.1 (port 0), one thread per connection, a
 * minimal HTTP/1.1 parser with keep-alive.  Serves getMe, getUpdates (from a
 * scripted queue), sendMessage, editMessageText, answerCallbackQuery,
 * setMyCommands, sendChatAction, sendDocument; records every request; injects
 * faults (429 with retry_after, 500, a dropped connection, malformed JSON). */
#ifndef SKYNET_TEST_FAKEBOT_H
#define SKYNET_TEST_FAKEBOT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#define FK_TOKEN "123:abc"
#define FK_MAX 4096

enum fk_fault { FK_NONE, FK_429, FK_500, FK_DROP, FK_GARBAGE };

struct fk_rec {
  char method[40];
  char *body;
  long long at;
  enum fk_fault fault;
};

struct fk {
  int lfd;
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
};

static inline long long fk_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fk_reply(int fd, int status, const char *body)
{
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Connection: keep-alive\r\n\r\n", status, strlen(body));
  if (send(fd, head, (size_t)n, MSG_NOSIGNAL) < 0 || send(fd, body, strlen(body), MSG_NOSIGNAL) < 0)
    return;
}

/* Builds the getUpdates answer from the queue (caller holds mu). */
static char *fk_updates(struct fk *f, const char *body)
{
  json_object *req = json_tokener_parse(body), *v;
  long long offset = 0;
  size_t cap = 64, len;
  char *out;

  if (req && json_object_object_get_ex(req, "offset", &v))
    offset = json_object_get_int64(v);
  if (req)
    json_object_put(req);
  for (size_t i = 0; i < f->n_updates; i++)
    if (f->update_ids[i] >= offset)
      cap += strlen(f->updates[i]) + 1;
  out = malloc(cap);
  len = (size_t)snprintf(out, cap, "{\"ok\":true,\"result\":[");
  for (size_t i = 0, k = 0; i < f->n_updates && k < 100; i++) {
    if (f->update_ids[i] < offset)
      continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s", k++ ? "," : "", f->updates[i]);
  }
  snprintf(out + len, cap - len, "]}");
  return out;
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
  if (f->fault_count > 0 && strcmp(method, f->fault_method) == 0) {
    fault = f->fault;
    f->fault_count--;
  }
  if (f->n_recs < sizeof f->recs / sizeof f->recs[0]) {
    r = &f->recs[f->n_recs++];
    snprintf(r->method, sizeof r->method, "%s", method);
    r->body = strdup(body);
    r->at = fk_ms();
    r->fault = fault;
  }
  if (fault == FK_NONE && strcmp(method, "getUpdates") == 0) {
    char *u = fk_updates(f, body);
    pthread_mutex_unlock(&f->mu);
    if (strlen(u) < 30)
      usleep(100 * 1000);   /* answers at once-ish, like an emulator */
    fk_reply(fd, 200, u);
    free(u);
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
  case FK_GARBAGE:
    fk_reply(fd, 200, "{\"ok\":tru");
    return 1;
  default:
    fk_reply(fd, 200, out);
    return 1;
  }
}

static void *fk_conn(void *arg)
{
  struct fk **pa = arg;
  struct fk *f = pa[0];
  int fd = (int)(intptr_t)pa[1];
  size_t cap = 1 << 20, len = 0;
  char *b = malloc(cap + 1);

  free(arg);
  for (;;) {
    char *end, *cl, path[512];
    size_t hl, bl = 0;
    ssize_t r;
    b[len] = '\0';
    if (!(end = strstr(b, "\r\n\r\n"))) {
      if (len >= cap || (r = read(fd, b + len, cap - len)) <= 0)
        break;
      len += (size_t)r;
      continue;
    }
    hl = (size_t)(end - b) + 4;
    for (cl = b; cl < end; cl++)
      if (strncasecmp(cl, "\r\nContent-Length:", 17) == 0) {
        bl = strtoul(cl + 17, NULL, 10);
        break;
      }
    if (hl + bl > cap)
      break;
    while (len < hl + bl) {
      if ((r = read(fd, b + len, cap - len)) <= 0)
        goto done;
      len += (size_t)r;
    }
    if (sscanf(b, "%*s %511s", path) != 1)
      break;
    {
      char save = b[hl + bl];
      b[hl + bl] = '\0';
      if (!fk_serve(f, fd, path, b + hl))
        break;
      b[hl + bl] = save;
    }
    memmove(b, b + hl + bl, len - hl - bl);
    len -= hl + bl;
  }
done:
  close(fd);
  free(b);
  return NULL;
}

static void *fk_accept(void *arg)
{
  struct fk *f = arg;

  for (;;) {
    int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    pthread_t th;
    void **pa;
    if (fd < 0) {
      if (f->stop)
        return NULL;
      continue;
    }
    pa = malloc(2 * sizeof *pa);
    pa[0] = f;
    pa[1] = (void *)(intptr_t)fd;
    if (pthread_create(&th, NULL, fk_conn, pa) == 0)
      pthread_detach(th);
  }
}

static inline int fk_start(struct fk *f)
{
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int one = 1;

  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  f->next_update = 1000;
  f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(f->lfd, (struct sockaddr *)&a, sizeof a) || listen(f->lfd, 16) ||
      getsockname(f->lfd, (struct sockaddr *)&a, &al))
    return -1;
  f->port = ntohs(a.sin_port);
  return pthread_create(&f->th, NULL, fk_accept, f);
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
