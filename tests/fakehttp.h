/* tests/fakehttp.h — the HTTP/1.1 plumbing shared by the tests' fake servers
 * (the Bot API in e2e/fakebot.h, the model APIs in fakellm.h).
 *
 * A listening socket on 127.0.0.1 at a free port, an accept thread, one
 * thread per connection reading requests with keep-alive (Content-Length
 * bodies, bounded size), TCP_NODELAY like real servers.  Each request goes to
 * the server's serve function, which writes the answer to fd itself; it
 * returns 0 to close the connection (a fault: no answer). */
#ifndef SKYNET_TEST_FAKEHTTP_H
#define SKYNET_TEST_FAKEHTTP_H

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
#include <unistd.h>

struct fh_request {
  char path[512];
  const char *headers;        /* the header block, lines joined by \r\n */
  size_t headers_len;
  const char *body;           /* NUL-terminated */
};

typedef int (*fh_serve_fn)(void *ud, int fd, const struct fh_request *rq);

struct fh_server {
  int lfd;
  int port;
  pthread_t th;
  fh_serve_fn serve;
  void *ud;
  size_t max_request;
  volatile int stop;
  volatile int accepts;       /* connections accepted so far */
};

/* The value of header `name` ("Authorization") into out; 1 if present. */
static inline int fh_header(const struct fh_request *rq, const char *name, char *out, size_t n)
{
  size_t nl = strlen(name);

  for (const char *h = rq->headers; h && h < rq->headers + rq->headers_len; h++)
    if (h[0] == '\r' && h[1] == '\n' && strncasecmp(h + 2, name, nl) == 0 && h[2 + nl] == ':') {
      const char *v = h + 3 + nl, *e;
      while (*v == ' ' || *v == '\t')
        v++;
      e = strstr(v, "\r\n");
      snprintf(out, n, "%.*s", (int)(e ? (size_t)(e - v) : strlen(v)), v);
      return 1;
    }
  if (n)
    out[0] = '\0';
  return 0;
}

static void *fh_conn(void *arg)
{
  void **pa = arg;
  struct fh_server *s = pa[0];
  int fd = (int)(intptr_t)pa[1];
  size_t cap = s->max_request, len = 0;
  char *b = malloc(cap + 1);

  free(arg);
  while (b) {
    struct fh_request rq;
    char *end, lenv[32];
    size_t hl, bl;
    ssize_t r;
    b[len] = '\0';
    if (!(end = strstr(b, "\r\n\r\n"))) {
      if (len >= cap || (r = read(fd, b + len, cap - len)) <= 0)
        break;
      len += (size_t)r;
      continue;
    }
    hl = (size_t)(end - b) + 4;
    rq.headers = b;
    rq.headers_len = hl - 2;
    bl = fh_header(&rq, "Content-Length", lenv, sizeof lenv) ? strtoul(lenv, NULL, 10) : 0;
    if (hl + bl > cap)
      break;
    while (len < hl + bl) {
      if ((r = read(fd, b + len, cap - len)) <= 0)
        goto done;
      len += (size_t)r;
    }
    b[len] = '\0';
    if (sscanf(b, "%*s %511s", rq.path) != 1)
      break;
    char save = b[hl + bl];
    b[hl + bl] = '\0';
    rq.body = b + hl;
    if (!s->serve(s->ud, fd, &rq))
      break;
    b[hl + bl] = save;
    memmove(b, b + hl + bl, len - hl - bl);
    len -= hl + bl;
  }
done:
  close(fd);
  free(b);
  return NULL;
}

static void *fh_accept(void *arg)
{
  struct fh_server *s = arg;

  for (;;) {
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC), one = 1;
    pthread_t th;
    void **pa;
    if (fd < 0) {
      if (s->stop)
        return NULL;
      continue;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    __atomic_add_fetch(&s->accepts, 1, __ATOMIC_SEQ_CST);
    pa = malloc(2 * sizeof *pa);
    pa[0] = s;
    pa[1] = (void *)(intptr_t)fd;
    if (pthread_create(&th, NULL, fh_conn, pa) == 0)
      pthread_detach(th);
    else {
      close(fd);
      free(pa);
    }
  }
}

/* Listens on 127.0.0.1 (s->port set) and serves; 0 on success. */
static inline int fh_start(struct fh_server *s, fh_serve_fn serve, void *ud, size_t max_request)
{
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int one = 1;

  memset(s, 0, sizeof *s);
  s->serve = serve;
  s->ud = ud;
  s->max_request = max_request;
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) || listen(s->lfd, 16) ||
      getsockname(s->lfd, (struct sockaddr *)&a, &al))
    return -1;
  s->port = ntohs(a.sin_port);
  return pthread_create(&s->th, NULL, fh_accept, s);
}

#endif
