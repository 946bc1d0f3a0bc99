/* tests/faketls.h — TLS in front of a plain fake server, for the tests and the
 * benchmark: certificates made at test time with the openssl CLI (a CA and a
 * server certificate for "localhost"), and a relay that accepts TLS on
 * 127.0.0.1 (OpenSSL, as a server) and pumps the plain bytes to and from a
 * backend port, one thread per connection.  OpenSSL, as most real servers,
 * rather than mbedtls: on this 2-core machine the server's half of a full
 * handshake (an RSA-2048 signature, two X25519 operations) costs ~4.6 ms of
 * CPU in mbedtls 2.28 against ~0.4 ms in OpenSSL, and the benchmark would
 * count it in skynet's start-up; Telegram's servers do it elsewhere. */
#ifndef SKYNET_TEST_FAKETLS_H
#define SKYNET_TEST_FAKETLS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* OpenSSL's types.h names a type ERR_STATE, as engine/err.h an error code. */
#define ERR_STATE ft_openssl_ERR_STATE
#include <openssl/ssl.h>
#undef ERR_STATE

/* What crossed the relay, when: the server's TLS end as a real server sees
 * it (ft_log_on). */
#define FT_LOG_MAX 8192
struct ft_event {
  long long us;                        /* CLOCK_MONOTONIC */
  int from_client;                     /* 1: a request from skynet, 0: to it */
  char text[1024];                     /* the plaintext's start */
};

struct ft_relay {
  int lfd, port, backend_port;
  pthread_t th;
  SSL_CTX *ctx;                        /* session tickets on, as real servers */
  pthread_mutex_t log_mu;
  struct ft_event *log;                /* NULL: not kept */
  volatile int log_n;
  volatile int handshakes_failed;
  volatile int handshakes;             /* handshakes that succeeded */
  volatile int resumed;                /* of them, those that resumed a ticket */
  volatile int stopping;
  volatile int active;                 /* connections being relayed */
};

/* Makes dir/ca.crt, dir/srv.crt, dir/srv.key (RSA 2048, CN and SAN
 * "localhost") with the openssl CLI; 0 on success.  RSA, as the chain
 * api.telegram.org presents: what the client spends on verifying it is
 * then what it spends against Telegram (two P-256 ECDSA verifications cost
 * it several ms more on mbedtls 2.28). */
static inline int ft_make_certs(const char *dir)
{
  char cmd[4096];

  snprintf(cmd, sizeof cmd,
           "cd '%s' && "
           "printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext && "
           "openssl req -x509 -newkey rsa:2048 -nodes "
           "-keyout ca.key -out ca.crt -subj /CN=skynet-test-ca -days 2 "
           "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
           ">/dev/null 2>&1 && "
           "openssl req -newkey rsa:2048 -nodes "
           "-keyout srv.key -out srv.csr -subj /CN=localhost >/dev/null 2>&1 && "
           "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out srv.crt -days 2 -extfile ext >/dev/null 2>&1", dir);
  return system(cmd) == 0 ? 0 : -1;
}

struct ft_conn {
  struct ft_relay *r;
  int fd;
};

static inline void ft_note(struct ft_relay *r, int from_client, const unsigned char *b, size_t n)
{
  struct timespec ts;

  if (!r->log)
    return;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  pthread_mutex_lock(&r->log_mu);
  if (r->log_n < FT_LOG_MAX) {
    struct ft_event *e = &r->log[r->log_n];
    e->us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    e->from_client = from_client;
    n = n < sizeof e->text - 1 ? n : sizeof e->text - 1;
    memcpy(e->text, b, n);
    e->text[n] = 0;
    __atomic_store_n(&r->log_n, r->log_n + 1, __ATOMIC_SEQ_CST);
  }
  pthread_mutex_unlock(&r->log_mu);
}

/* Keeps what crosses the relay from now on (ft_note); before traffic. */
static inline int ft_log_on(struct ft_relay *r)
{
  pthread_mutex_init(&r->log_mu, NULL);
  r->log = calloc(FT_LOG_MAX, sizeof *r->log);
  return r->log ? 0 : -1;
}

static void *ft_pump(void *arg)
{
  struct ft_conn *c = arg;
  struct ft_relay *r = c->r;
  int fd = c->fd, be = -1, rc;
  SSL *ssl = SSL_new(r->ctx);
  struct sockaddr_in a;
  unsigned char b[16384];

  free(c);
  if (!ssl || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1) {
    __atomic_add_fetch(&r->handshakes_failed, 1, __ATOMIC_SEQ_CST);
    goto out;
  }
  __atomic_add_fetch(&r->handshakes, 1, __ATOMIC_SEQ_CST);
  if (SSL_session_reused(ssl))
    __atomic_add_fetch(&r->resumed, 1, __ATOMIC_SEQ_CST);
  be = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  rc = 1;
  setsockopt(be, IPPROTO_TCP, TCP_NODELAY, &rc, sizeof rc);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)r->backend_port);
  if (connect(be, (struct sockaddr *)&a, sizeof a))
    goto out;
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {be, POLLIN, 0}};
    if (!SSL_pending(ssl) && poll(p, 2, -1) < 0)
      break;
    if (SSL_pending(ssl) || p[0].revents) {
      rc = SSL_read(ssl, b, sizeof b);
      if (rc <= 0 && SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ)
        continue;
      if (rc <= 0 || write(be, b, (size_t)rc) != rc)
        break;
      ft_note(r, 1, b, (size_t)rc);
    }
    if (p[1].revents) {
      ssize_t n = read(be, b, sizeof b);
      if (n <= 0 || SSL_write(ssl, b, (int)n) != (int)n)
        break;
      ft_note(r, 0, b, (size_t)n);
    }
  }
out:
  if (ssl) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  if (be >= 0)
    close(be);
  close(fd);
  __atomic_sub_fetch(&r->active, 1, __ATOMIC_SEQ_CST);
  return NULL;
}
static void *ft_accept(void *arg)
{
  struct ft_relay *r = arg;

  for (;;) {
    int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC), one = 1;
    struct ft_conn *c;
    pthread_t th;
    if (fd < 0 && __atomic_load_n(&r->stopping, __ATOMIC_SEQ_CST))
      break;
    if (fd < 0)
      continue;
    /* As real servers: without it, Nagle holds the handshake's second
     * record for the client's delayed ACK (40 ms). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = malloc(sizeof *c);
    c->r = r;
    c->fd = fd;
    __atomic_add_fetch(&r->active, 1, __ATOMIC_SEQ_CST);
    if (pthread_create(&th, NULL, ft_pump, c) == 0) {
      pthread_detach(th);
    } else {
      __atomic_sub_fetch(&r->active, 1, __ATOMIC_SEQ_CST);
      close(fd);
      free(c);
    }
  }
  return NULL;
}

/* TLS on 127.0.0.1 at `port` (0: any; r->port set) relayed to
 * 127.0.0.1:backend_port, with dir's srv.crt and srv.key, session tickets
 * on; 0 on success. */
static inline int ft_start_on(struct ft_relay *r, const char *dir, int backend_port, int port)
{
  char crt[1200], key[1200];
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int one = 1;

  memset(r, 0, sizeof *r);
  r->backend_port = backend_port;
  snprintf(crt, sizeof crt, "%s/srv.crt", dir);
  snprintf(key, sizeof key, "%s/srv.key", dir);
  if (!(r->ctx = SSL_CTX_new(TLS_server_method())) ||
      SSL_CTX_use_certificate_chain_file(r->ctx, crt) != 1 ||
      SSL_CTX_use_PrivateKey_file(r->ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(r->ctx) != 1) {
    SSL_CTX_free(r->ctx);
    r->ctx = NULL;
    return -1;
  }
  r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  if (bind(r->lfd, (struct sockaddr *)&a, sizeof a) || listen(r->lfd, 16) ||
      getsockname(r->lfd, (struct sockaddr *)&a, &al))
    return -1;
  r->port = ntohs(a.sin_port);
  return pthread_create(&r->th, NULL, ft_accept, r);
}

static inline int ft_start(struct ft_relay *r, const char *dir, int backend_port)
{
  return ft_start_on(r, dir, backend_port, 0);
}

/* Stops accepting, closes the listening socket (its port can then be taken
 * by another relay) and, once the connections it relays have ended (the
 * clients closed them; up to 10 s), frees what it holds. */
static inline void ft_stop(struct ft_relay *r)
{
  __atomic_store_n(&r->stopping, 1, __ATOMIC_SEQ_CST);
  shutdown(r->lfd, SHUT_RDWR);
  pthread_join(r->th, NULL);
  close(r->lfd);
  for (int i = 0; i < 1000 && __atomic_load_n(&r->active, __ATOMIC_SEQ_CST); i++)
    usleep(10000);
  if (__atomic_load_n(&r->active, __ATOMIC_SEQ_CST))
    return;                     /* still in use: leaked rather than freed under it */
  SSL_CTX_free(r->ctx);
  if (r->log) {
    free(r->log);
    r->log = NULL;
    pthread_mutex_destroy(&r->log_mu);
  }
}

#endif
