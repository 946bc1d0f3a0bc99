/* tests/fakellm.h — a fake model server for the tests: Google Gemini
 * generateContent and OpenAI-compatible chat completions on 127.0.0.1.
 *
 * A listening socket (port 0), one thread per connection, HTTP/1.1 with
 * keep-alive.  Answers come from a script (FIFO) and then from a default:
 * each with a status, a body, an optional extra header (Retry-After), a
 * delay (to provoke client timeouts) or a dropped connection.  Every request
 * is recorded: path, the auth header, the body. */
#ifndef SKYNET_TEST_FAKELLM_H
#define SKYNET_TEST_FAKELLM_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "fakehttp.h"

#define FL_MAX 256

struct fl_answer {
  int status;
  char *body;
  char header[128];            /* one extra header line, or "" */
  int delay_ms;
  int drop;                    /* close without answering */
};

struct fl_req {
  char path[512];
  char auth[256];              /* x-goog-api-key or Authorization value */
  char *body;
  long long at_us;
};

struct fl {
  struct fh_server http;
  int port;
  pthread_mutex_t mu;
  struct fl_answer script[FL_MAX];
  size_t n_script, next;
  struct fl_answer dflt;
  struct fl_req reqs[FL_MAX];
  size_t n_reqs;
};

static inline long long fl_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- answers in the documented shapes ----------------------------------- */

static inline char *fl_gemini_text(const char *text, int ptok, int ctok, const char *finish)
{
  json_object *r = json_object_new_object(), *cands = json_object_new_array();
  json_object *c = json_object_new_object(), *content = json_object_new_object();
  json_object *parts = json_object_new_array(), *p = json_object_new_object();
  json_object *u = json_object_new_object();
  char *s;

  json_object_object_add(p, "text", json_object_new_string(text));
  json_object_array_add(parts, p);
  json_object_object_add(content, "role", json_object_new_string("model"));
  json_object_object_add(content, "parts", parts);
  json_object_object_add(c, "content", content);
  json_object_object_add(c, "finishReason", json_object_new_string(finish ? finish : "STOP"));
  json_object_array_add(cands, c);
  json_object_object_add(r, "candidates", cands);
  json_object_object_add(u, "promptTokenCount", json_object_new_int(ptok));
  json_object_object_add(u, "candidatesTokenCount", json_object_new_int(ctok));
  json_object_object_add(u, "totalTokenCount", json_object_new_int(ptok + ctok));
  json_object_object_add(r, "usageMetadata", u);
  json_object_object_add(r, "modelVersion", json_object_new_string("gemini-fake"));
  s = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
  json_object_put(r);
  return s;
}

static inline char *fl_openai_text(const char *text, int ptok, int ctok, const char *finish,
                                   const char *refusal)
{
  json_object *r = json_object_new_object(), *choices = json_object_new_array();
  json_object *c = json_object_new_object(), *m = json_object_new_object();
  json_object *u = json_object_new_object();
  char *s;

  json_object_object_add(m, "role", json_object_new_string("assistant"));
  json_object_object_add(m, "content", text ? json_object_new_string(text) : NULL);
  json_object_object_add(m, "refusal", refusal ? json_object_new_string(refusal) : NULL);
  json_object_object_add(c, "index", json_object_new_int(0));
  json_object_object_add(c, "message", m);
  json_object_object_add(c, "finish_reason", json_object_new_string(finish ? finish : "stop"));
  json_object_array_add(choices, c);
  json_object_object_add(r, "choices", choices);
  json_object_object_add(u, "prompt_tokens", json_object_new_int(ptok));
  json_object_object_add(u, "completion_tokens", json_object_new_int(ctok));
  json_object_object_add(u, "total_tokens", json_object_new_int(ptok + ctok));
  json_object_object_add(r, "usage", u);
  s = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
  json_object_put(r);
  return s;
}

/* ---- script ---------------------------------------------------------------- */

/* Queues an answer; body is taken (malloc'd) or copied when copy. */
static inline void fl_push(struct fl *f, int status, char *body, const char *header,
                           int delay_ms, int drop)
{
  pthread_mutex_lock(&f->mu);
  if (f->n_script < FL_MAX) {
    struct fl_answer *a = &f->script[f->n_script++];
    a->status = status;
    a->body = body;
    snprintf(a->header, sizeof a->header, "%s", header ? header : "");
    a->delay_ms = delay_ms;
    a->drop = drop;
  } else {
    free(body);
  }
  pthread_mutex_unlock(&f->mu);
}

static inline void fl_set_default(struct fl *f, int status, char *body)
{
  pthread_mutex_lock(&f->mu);
  free(f->dflt.body);
  f->dflt.status = status;
  f->dflt.body = body;
  pthread_mutex_unlock(&f->mu);
}

static inline size_t fl_count(struct fl *f)
{
  size_t n;
  pthread_mutex_lock(&f->mu);
  n = f->n_reqs;
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* Waits until at least n requests arrived; 1 when they did. */
static inline int fl_wait(struct fl *f, size_t n, int timeout_ms)
{
  long long end = fl_us() + (long long)timeout_ms * 1000;
  while (fl_us() < end) {
    if (fl_count(f) >= n)
      return 1;
    usleep(5000);
  }
  return fl_count(f) >= n;
}

/* ---- server ---------------------------------------------------------------- */

static void fl_answer_fd(int fd, const struct fl_answer *a)
{
  char head[512];
  const char *body = a->body ? a->body : "{}";
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "%s%sConnection: keep-alive\r\n\r\n", a->status, strlen(body), a->header,
                   a->header[0] ? "\r\n" : "");
  if (send(fd, head, (size_t)n, MSG_NOSIGNAL) < 0 || send(fd, body, strlen(body), MSG_NOSIGNAL) < 0)
    return;
}

static int fl_serve(struct fl *f, int fd, const char *path, const char *auth, const char *body)
{
  struct fl_answer a;
  char *copy = NULL;

  pthread_mutex_lock(&f->mu);
  if (f->n_reqs < FL_MAX) {
    struct fl_req *r = &f->reqs[f->n_reqs++];
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->auth, sizeof r->auth, "%s", auth);
    r->body = strdup(body);
    r->at_us = fl_us();
  }
  a = f->next < f->n_script ? f->script[f->next++] : f->dflt;
  if (a.body)
    copy = strdup(a.body);
  pthread_mutex_unlock(&f->mu);
  a.body = copy;
  if (!a.status)
    a.status = 500;
  if (a.delay_ms)
    usleep((useconds_t)a.delay_ms * 1000);
  if (a.drop) {
    free(copy);
    return 0;
  }
  fl_answer_fd(fd, &a);
  free(copy);
  return 1;
}

static int fl_serve_http(void *ud, int fd, const struct fh_request *rq)
{
  char auth[256];

  if (!fh_header(rq, "x-goog-api-key", auth, sizeof auth))
    fh_header(rq, "Authorization", auth, sizeof auth);
  return fl_serve(ud, fd, rq->path, auth, rq->body);
}

static inline int fl_start(struct fl *f)
{
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  if (fh_start(&f->http, fl_serve_http, f, 4 << 20))
    return -1;
  f->port = f->http.port;
  return 0;
}

/* Forgets script and records (between tests). */
static inline void fl_reset(struct fl *f)
{
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->n_script; i++)
    free(f->script[i].body);
  for (size_t i = 0; i < f->n_reqs; i++)
    free(f->reqs[i].body);
  f->n_script = f->next = f->n_reqs = 0;
  pthread_mutex_unlock(&f->mu);
}

#endif
