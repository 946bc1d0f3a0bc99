/* engine/http.h — a small HTTP/1.1 client over mbedtls (replaces libcurl).
 *
 * DESIGN
 * One handle (struct http) is one kept-alive connection to whichever origin
 * the last request went to.  A request to the same scheme, host and port
 * reuses it; a connection the server closed while it sat idle is noticed
 * before sending (or by a send or first read that fails) and the request goes
 * once more on a fresh connection, but only if nothing of the answer had
 * arrived.  Everything is non-blocking underneath: name resolution
 * (getaddrinfo, IPv4 and IPv6), a connect with its own timeout, then poll()
 * against one deadline for the whole request.  A cancel hook, when set, is
 * asked at least every HTTP_CANCEL_POLL_MS while waiting.
 *
 * TLS (https://) is mbedtls 2.28, TLS 1.2, certificate and host name checked
 * (SNI sent).  The CA bundle is parsed once per process, on the first https
 * connection: $SSL_CERT_FILE if set, else the first of the usual system
 * bundles (/etc/ssl/certs/ca-certificates.crt, ...).  http_set_ca_file()
 * gives one handle its own trust anchors (tests, private CAs).
 *
 * Proxies: https_proxy / HTTPS_PROXY (for https://), http_proxy (for
 * http://; HTTP_PROXY is ignored as in curl, because of CGI's HTTP_PROXY
 * header) and no_proxy / NO_PROXY are honoured; both schemes go through the
 * proxy with an HTTP CONNECT tunnel (an http:// proxy URL, no proxy auth: a
 * proxy setting we cannot use fails the request rather than going direct).
 * Name resolution is getaddrinfo(), which the deadline cannot interrupt.
 *
 * Answers: Content-Length, chunked, or until close; the body is bounded by
 * the request's max_response.  Error messages (http_errstr) name the host and
 * port and what failed, never the path or query of the URL (a Telegram bot
 * token lives in the path), nor any header.
 *
 * Thread contract: a handle belongs to one thread at a time; different
 * handles may be used on different threads at once (the shared TLS state is
 * set up under a pthread_once and is read-only afterwards, the random
 * generator has its own lock). */
#ifndef SKYNET_HTTP_H
#define SKYNET_HTTP_H

#include <stddef.h>

#include "buf.h"
#include "err.h"

#define HTTP_CANCEL_POLL_MS 100

struct http;

/* A request.  headers is a NULL-terminated list of "Name: value" lines (may
 * be NULL); Host, Content-Length and Connection are added here.  A body with
 * no method means POST, none means GET. */
struct http_req {
  const char *method;
  const char *url;                 /* http:// or https:// */
  const char *const *headers;
  const void *body;
  size_t body_len;
  long timeout_ms;                 /* the whole request, connect included; 0: none */
  long connect_timeout_ms;         /* 0: 10 s */
  size_t max_response;             /* most body bytes accepted; 0: 8 MiB */
};

/* An answer.  head holds the status line and header lines as received
 * (NUL-terminated); body is NUL-terminated too. */
struct http_resp {
  int status;                      /* 0 until an answer arrived */
  struct buf head;
  struct buf body;
};

/* New handle; NULL when out of memory.  Does not connect. */
struct http *http_new(void);
/* Closes the connection and frees the handle; NULL-safe. */
void http_free(struct http *h);
/* cancel(ud) returning non-zero aborts the request in flight with
 * ERR_CANCELLED; fn NULL removes the hook. */
void http_set_cancel(struct http *h, int (*fn)(void *ud), void *ud);
/* This handle trusts the CAs in a PEM file instead of the system bundle;
 * read at once.  ERR_IO (message in http_errstr) when it cannot be used. */
enum err http_set_ca_file(struct http *h, const char *path);
/* Keeps this handle's TLS session in a file (0600) as well as in memory, so
 * that the next process resumes it instead of a full handshake (see
 * http.c); the file is read at the next https connection.  NULL: memory
 * only.  ERR_NOMEM. */
enum err http_set_session_file(struct http *h, const char *path);
/* Closes the kept connection (the next request opens a new one). */
void http_close(struct http *h);

/* Sends rq and reads the answer into rs (which it initialises).  ERR_OK for
 * any HTTP status; else ERR_NET (cannot connect, TLS, reset, malformed
 * answer), ERR_TIMEOUT, ERR_CANCELLED, ERR_TOOBIG (answer over the cap),
 * ERR_INVAL (bad URL), ERR_NOMEM; http_errstr() says what happened.
 * rs must be released with http_resp_release() in every case. */
enum err http_do(struct http *h, const struct http_req *rq, struct http_resp *rs);
/* The message for the last failure of h ("" after a success); never has
 * the URL's path or a header in it. */
const char *http_errstr(const struct http *h);
/* Connections this handle opened so far (tests: keep-alive reuse). */
unsigned http_connects(const struct http *h);

void http_resp_release(struct http_resp *rs);
/* Value of the first header called name (any case), trimmed, into out
 * (clipped to n); 1 if present, else 0 and out is "". */
int http_resp_header(const struct http_resp *rs, const char *name, char *out, size_t n);

/* multipart/form-data body builder (RFC 7578). */
struct http_form {
  struct buf body;
  char boundary[48];
  char content_type[96];           /* the Content-Type header line to send */
};

void http_form_init(struct http_form *f, size_t max);
/* Adds a field; filename and type may be NULL (a plain field). */
enum err http_form_add(struct http_form *f, const char *name, const char *filename,
                       const char *type, const void *data, size_t len);
/* Closes the body; f->body and f->content_type are then ready to send. */
enum err http_form_finish(struct http_form *f);
void http_form_release(struct http_form *f);

#endif
