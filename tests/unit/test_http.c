/* test_http — engine/http.c against real servers on 127.0.0.1: plain and
 * TLS (certificates made with the openssl CLI), keep-alive reuse, a server
 * closing an idle connection, a reset mid-answer, chunked bodies, timeouts,
 * cancel, oversized answers, multipart uploads, CONNECT proxies. */
#include <fcntl.h>
#include <sys/stat.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>

#include "../faketls.h"
#include "../fakehttp.h"
#include "../harness.h"
#include "../testutil.h"
#include "engine/http.h"

/* What the fake server does with the next requests. */
enum mode {
  M_ECHO,            /* 200, body = "<method> <path> <body>", X-Test header */
  M_CLOSE_AFTER,     /* answers, then closes the connection (keep-alive said) */
  M_DROP_SECOND,     /* second request on a connection: closed unanswered */
  M_DROP_ALL,        /* every request: closed unanswered */
  M_RESET_MID,       /* half an answer, then a TCP reset */
  M_CHUNKED,         /* chunked answer with an extension and a trailer */
  M_SLOW,            /* waits 2 s before answering */
  M_BIG,             /* Content-Length 100000 */
  M_BIG_CHUNKED,     /* 100000 bytes in chunks */
  M_FORM,            /* checks a multipart body */
  M_PROXY,           /* answers CONNECT with 200, then echoes */
  M_EOF_BODY,        /* HTTP/1.0, no length, body up to close */
};

static struct {
  pthread_mutex_t mu;
  enum mode mode;
  int requests;
  char last_path[512];
  char last_connect[512];
  char form_seen[1024];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct fh_server g_srv;

static int say(int fd, const char *s)
{
  size_t n = strlen(s);
  return write(fd, s, n) == (ssize_t)n;
}

static void reset_close(int fd)
{
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

static int echo(int fd, const struct fh_request *rq)
{
  char out[2048], body[1400];
  char method[16] = "";

  sscanf(rq->headers, "%15s", method);
  snprintf(body, sizeof body, "%s %s %s", method, rq->path, rq->body);
  snprintf(out, sizeof out,
           "HTTP/1.1 200 OK\r\nx-test:  yes \r\nContent-Type: text/plain\r\n"
           "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
  return say(fd, out);
}

/* Part `name` of a multipart body into out: "filename|type|data". */
static void form_part(const char *body, const char *name, char *out, size_t n)
{
  char key[80];
  const char *p, *d, *end, *fn, *ty;

  snprintf(key, sizeof key, "name=\"%s\"", name);
  out[0] = 0;
  if (!(p = strstr(body, key)) || !(d = strstr(p, "\r\n\r\n")) || !(end = strstr(d + 4, "\r\n--")))
    return;
  fn = strstr(p, "filename=\"");
  ty = strstr(p, "Content-Type: ");
  snprintf(out, n, "%.*s|%.*s|%.*s", fn && fn < d ? (int)strcspn(fn + 10, "\"") : 0,
           fn && fn < d ? fn + 10 : "", ty && ty < d ? (int)strcspn(ty + 14, "\r") : 0,
           ty && ty < d ? ty + 14 : "", (int)(end - d - 4), d + 4);
}

static int serve(void *ud, int fd, const struct fh_request *rq)
{
  static __thread int fd_seen = -1, on_conn;
  char buf[512], ct[100];
  enum mode m;

  (void)ud;
  if (fd != fd_seen)
    fd_seen = fd, on_conn = 0;
  on_conn++;
  pthread_mutex_lock(&g.mu);
  m = g.mode;
  g.requests++;
  snprintf(g.last_path, sizeof g.last_path, "%s", rq->path);
  pthread_mutex_unlock(&g.mu);
  switch (m) {
  case M_ECHO:
    return echo(fd, rq);
  case M_CLOSE_AFTER:
    echo(fd, rq);
    return 0;
  case M_DROP_SECOND:
    return on_conn >= 2 ? 0 : echo(fd, rq);
  case M_DROP_ALL:
    return 0;
  case M_RESET_MID:
    say(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    tu_sleep_ms(50);
    reset_close(fd);
    return 0;
  case M_CHUNKED:
    return say(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
  case M_SLOW:
    tu_sleep_ms(2000);
    return echo(fd, rq);
  case M_BIG: {
    static char big[100001];
    memset(big, 'x', 100000);
    say(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    return say(fd, big);
  }
  case M_BIG_CHUNKED:
    say(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 100; i++) {
      char chunk[1100];
      snprintf(chunk, sizeof chunk, "3e8\r\n%01000d\r\n", 0);
      if (!say(fd, chunk))
        return 0;
    }
    return say(fd, "0\r\n\r\n");
  case M_FORM: {
    char a[100], b[100], c[200];
    fh_header(rq, "Content-Type", ct, sizeof ct);
    form_part(rq->body, "chat_id", a, sizeof a);
    form_part(rq->body, "caption", b, sizeof b);
    form_part(rq->body, "document", c, sizeof c);
    pthread_mutex_lock(&g.mu);
    snprintf(g.form_seen, sizeof g.form_seen, "%s\n%s\n%s\n%s",
             strstr(ct, "multipart/form-data; boundary=") ? "multipart" : ct, a, b, c);
    pthread_mutex_unlock(&g.mu);
    return echo(fd, rq);
  }
  case M_PROXY:
    if (strncmp(rq->headers, "CONNECT ", 8) == 0) {
      pthread_mutex_lock(&g.mu);
      snprintf(g.last_connect, sizeof g.last_connect, "%.*s", (int)strcspn(rq->headers, "\r"),
               rq->headers);
      pthread_mutex_unlock(&g.mu);
      return say(fd, "HTTP/1.1 200 Connection established\r\n\r\n");
    }
    return echo(fd, rq);
  case M_EOF_BODY:
    snprintf(buf, sizeof buf, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
    say(fd, buf);
    return 0;
  }
  return 0;
}

static void set_mode(enum mode m)
{
  pthread_mutex_lock(&g.mu);
  g.mode = m;
  g.requests = 0;
  pthread_mutex_unlock(&g.mu);
}

static int requests(void)
{
  pthread_mutex_lock(&g.mu);
  int n = g.requests;
  pthread_mutex_unlock(&g.mu);
  return n;
}

static char *url(const char *path)
{
  static char u[256];
  snprintf(u, sizeof u, "http://127.0.0.1:%d%s", g_srv.port, path);
  return u;
}

TEST(get_post_and_headers)
{
  struct http *h = http_new();
  const char *hdr[] = {"X-One: 1", NULL};
  struct http_req rq = {.url = url("/a?b=c"), .headers = hdr, .timeout_ms = 5000};
  struct http_resp rs;
  char v[32];

  set_mode(M_ECHO);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_EQ(rs.status, 200);
  ASSERT_STREQ(buf_str(&rs.body), "GET /a?b=c ");
  ASSERT(http_resp_header(&rs, "X-TEST", v, sizeof v));
  ASSERT_STREQ(v, "yes");
  ASSERT(!http_resp_header(&rs, "X-Missing", v, sizeof v));
  http_resp_release(&rs);
  rq.body = "{\"k\":1}";
  rq.body_len = 7;
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "POST /a?b=c {\"k\":1}");
  http_resp_release(&rs);
  ASSERT_EQ(http_connects(h), 1);
  http_free(h);
}

TEST(keep_alive_reuses_one_connection)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/k"), .body = "x", .body_len = 1, .timeout_ms = 5000};
  struct http_resp rs;
  int before = g_srv.accepts;

  set_mode(M_ECHO);
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
    http_resp_release(&rs);
  }
  ASSERT_EQ(http_connects(h), 1);
  ASSERT_EQ(g_srv.accepts - before, 1);
  http_free(h);
}

TEST(server_closing_idle_connections)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/c"), .timeout_ms = 5000};
  struct http_resp rs;

  /* Closed after each answer: noticed before the next request. */
  set_mode(M_CLOSE_AFTER);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
    ASSERT_EQ(rs.status, 200);
    http_resp_release(&rs);
    tu_sleep_ms(50);
  }
  ASSERT_EQ(http_connects(h), 3);
  ASSERT_EQ(requests(), 3);
  http_free(h);

  /* Closed when the request arrives (the race): resent once, on a new one. */
  h = http_new();
  set_mode(M_DROP_SECOND);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  http_resp_release(&rs);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_EQ(rs.status, 200);
  http_resp_release(&rs);
  ASSERT_EQ(requests(), 3);
  ASSERT_EQ(http_connects(h), 2);

  /* A server that never answers: one resend at most, then an error. */
  set_mode(M_DROP_ALL);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT(requests() <= 2);
  ASSERT_CONTAINS(http_errstr(h), "closed without an answer");
  http_free(h);
}

TEST(reset_mid_answer_is_an_error_and_not_resent)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/r"), .timeout_ms = 5000};
  struct http_resp rs;

  set_mode(M_ECHO);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);    /* a kept connection to start with */
  http_resp_release(&rs);
  set_mode(M_RESET_MID);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT_EQ(requests(), 1);
  ASSERT(strstr(http_errstr(h), "reset") || strstr(http_errstr(h), "complete"));
  set_mode(M_ECHO);                             /* and the handle works again */
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  http_resp_release(&rs);
  http_free(h);
}

TEST(chunked_and_until_close)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/ch"), .timeout_ms = 5000};
  struct http_resp rs;

  set_mode(M_CHUNKED);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
    ASSERT_STREQ(buf_str(&rs.body), "hello world");
    http_resp_release(&rs);
  }
  ASSERT_EQ(http_connects(h), 1);
  set_mode(M_EOF_BODY);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "until the end");
  http_resp_release(&rs);
  http_free(h);
}

TEST(timeouts_and_cancel)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/slow"), .timeout_ms = 300};
  struct http_resp rs;
  long long t0 = tu_now_ms();

  set_mode(M_SLOW);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_TIMEOUT);
  http_resp_release(&rs);
  ASSERT(tu_now_ms() - t0 < 1000);
  ASSERT_CONTAINS(http_errstr(h), "timed out");
  http_free(h);

  /* A black-hole address: the connect timeout (TEST-NET-1, never routed). */
  h = http_new();
  struct http_req bh = {.url = "http://192.0.2.1:81/", .connect_timeout_ms = 200,
                        .timeout_ms = 5000};
  t0 = tu_now_ms();
  enum err e = http_do(h, &bh, &rs);
  http_resp_release(&rs);
  ASSERT(e == ERR_TIMEOUT || e == ERR_NET);    /* NET where the sandbox has no route */
  ASSERT(tu_now_ms() - t0 < 1500);
  http_free(h);
}

static long long g_cancel_at;
static int cancel_later(void *ud)
{
  (void)ud;
  return tu_now_ms() >= g_cancel_at;
}

TEST(cancel_hook)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/slow"), .timeout_ms = 10000};
  struct http_resp rs;
  long long t0 = tu_now_ms();

  set_mode(M_SLOW);
  g_cancel_at = t0 + 200;
  http_set_cancel(h, cancel_later, NULL);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_CANCELLED);
  http_resp_release(&rs);
  ASSERT(tu_now_ms() - t0 < 200 + 3 * HTTP_CANCEL_POLL_MS);
  http_free(h);
}

TEST(oversized_answers_are_refused)
{
  struct http *h = http_new();
  struct http_req rq = {.url = url("/big"), .timeout_ms = 5000, .max_response = 50000};
  struct http_resp rs;

  set_mode(M_BIG);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_TOOBIG);
  ASSERT_CONTAINS(http_errstr(h), "larger than 50000");
  http_resp_release(&rs);
  set_mode(M_BIG_CHUNKED);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_TOOBIG);
  http_resp_release(&rs);
  rq.max_response = 200000;
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_EQ(rs.body.len, 100000);
  http_resp_release(&rs);
  http_free(h);
}

TEST(multipart_upload)
{
  struct http *h = http_new();
  struct http_form f;
  const char *hdr[2];
  struct http_req rq = {.url = url("/botX/sendDocument"), .headers = hdr, .timeout_ms = 5000};
  struct http_resp rs;
  static const char doc[] = "line one\r\nline two\n--not a boundary\n";

  http_form_init(&f, 1 << 20);
  ASSERT_EQ(http_form_add(&f, "chat_id", NULL, NULL, "42", 2), ERR_OK);
  ASSERT_EQ(http_form_add(&f, "caption", NULL, NULL, "the caption", 11), ERR_OK);
  ASSERT_EQ(http_form_add(&f, "document", "output.txt", "text/plain", doc, sizeof doc - 1),
            ERR_OK);
  ASSERT_EQ(http_form_add(&f, "bad\"name", NULL, NULL, "x", 1), ERR_INVAL);
  ASSERT_EQ(http_form_finish(&f), ERR_OK);
  hdr[0] = f.content_type;
  hdr[1] = NULL;
  rq.body = f.body.data;
  rq.body_len = f.body.len;
  set_mode(M_FORM);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  http_resp_release(&rs);
  pthread_mutex_lock(&g.mu);
  ASSERT_STREQ(g.form_seen, "multipart\n||42\n||the caption\n"
                            "output.txt|text/plain|line one\r\nline two\n--not a boundary\n");
  pthread_mutex_unlock(&g.mu);
  http_form_release(&f);
  http_free(h);
}

TEST(errors_never_show_the_path)
{
  struct http *h = http_new();
  struct http_req rq = {.url = "http://127.0.0.1:1/bot123:SECRET/getMe", .timeout_ms = 2000};
  struct http_resp rs;

  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT_CONTAINS(http_errstr(h), "cannot connect to 127.0.0.1 port 1");
  ASSERT(!strstr(http_errstr(h), "SECRET"));
  rq.url = "ftp://127.0.0.1/SECRET";
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_INVAL);
  http_resp_release(&rs);
  ASSERT(!strstr(http_errstr(h), "SECRET"));
  rq.url = "http://nonexistent.invalid/SECRET";
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT_CONTAINS(http_errstr(h), "nonexistent.invalid");
  ASSERT(!strstr(http_errstr(h), "SECRET"));
  http_free(h);
}

TEST(localhost_by_name)
{
  struct http *h = http_new();
  char u[100];
  struct http_req rq = {.url = u, .timeout_ms = 5000};
  struct http_resp rs;

  /* getaddrinfo may give ::1 first (nothing listens there): the next
   * address is tried. */
  snprintf(u, sizeof u, "http://localhost:%d/n", g_srv.port);
  set_mode(M_ECHO);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_EQ(rs.status, 200);
  http_resp_release(&rs);
  http_free(h);
}

/* A one-shot server on [::1]: answers one request, then closes. */
static void *v6_serve(void *arg)
{
  int lfd = (int)(intptr_t)arg, fd = accept(lfd, NULL, NULL);
  char b[2048];

  if (fd >= 0) {
    if (read(fd, b, sizeof b) > 0)
      say(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv6");
    close(fd);
  }
  close(lfd);
  return NULL;
}

TEST(ipv6_literal)
{
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  socklen_t al = sizeof a;
  int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  pthread_t th;
  char u[100];

  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1) ||
      getsockname(lfd, (struct sockaddr *)&a, &al)) {
    fprintf(stderr, "  no IPv6 loopback here: skipped\n");
    if (lfd >= 0)
      close(lfd);
    return;
  }
  ASSERT_EQ(pthread_create(&th, NULL, v6_serve, (void *)(intptr_t)lfd), 0);
  snprintf(u, sizeof u, "http://[::1]:%d/six", ntohs(a.sin6_port));
  struct http *h = http_new();
  struct http_req rq = {.url = u, .timeout_ms = 5000};
  struct http_resp rs;
  enum err e = http_do(h, &rq, &rs);
  pthread_join(th, NULL);
  ASSERT_EQ(e, ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "v6");
  http_resp_release(&rs);
  http_free(h);
}

TEST(proxy_connect_and_no_proxy)
{
  struct http *h = http_new();
  char px[100];
  struct http_req rq = {.url = "http://origin.example:8080/p?q=1", .timeout_ms = 5000};
  struct http_resp rs;

  snprintf(px, sizeof px, "http://127.0.0.1:%d", g_srv.port);
  setenv("http_proxy", px, 1);
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
  set_mode(M_PROXY);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "GET /p?q=1 ");
  http_resp_release(&rs);
  pthread_mutex_lock(&g.mu);
  ASSERT_STREQ(g.last_connect, "CONNECT origin.example:8080 HTTP/1.1");
  pthread_mutex_unlock(&g.mu);
  /* no_proxy covers the domain: a direct connection, which fails here. */
  setenv("no_proxy", "localhost, .example", 1);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT_CONTAINS(http_errstr(h), "origin.example");
  /* A proxy we cannot use is an error, not a silent direct connection. */
  unsetenv("no_proxy");
  setenv("http_proxy", "http://user:SECRET@127.0.0.1:1", 1);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_NET);
  http_resp_release(&rs);
  ASSERT_CONTAINS(http_errstr(h), "cannot use the proxy in http_proxy");
  ASSERT(!strstr(http_errstr(h), "SECRET"));
  unsetenv("http_proxy");
  unsetenv("no_proxy");
  http_free(h);
}

/* ---- TLS ---------------------------------------------------------------- *
 * Two CAs, each with a "localhost" server behind a relay.  SSL_CERT_FILE is
 * the system bundle plus the first CA (the path production uses: the indexed
 * bundle); http_set_ca_file() gives a handle one CA (the other path). */

static char g_dir[2][512];
static struct ft_relay g_tls[2];
static int g_tls_ok;

static void tls_setup(void)
{
  char cmd[2400];

  g_tls_ok = 1;
  for (int i = 0; i < 2; i++) {
    tu_tmpdir(g_dir[i], sizeof g_dir[i]);
    g_tls_ok &= ft_make_certs(g_dir[i]) == 0 && ft_start(&g_tls[i], g_dir[i], g_srv.port) == 0;
  }
  snprintf(cmd, sizeof cmd, "cat /etc/ssl/certs/ca-certificates.crt '%s/ca.crt' > '%s/bundle.pem' "
           "2>/dev/null || cp '%s/ca.crt' '%s/bundle.pem'", g_dir[0], g_dir[0], g_dir[0], g_dir[0]);
  g_tls_ok &= system(cmd) == 0;
  snprintf(cmd, sizeof cmd, "%s/bundle.pem", g_dir[0]);
  setenv("SSL_CERT_FILE", cmd, 1);   /* read on the first https connection */
}

static int tls_skip(void)
{
  if (g_tls_ok)
    return 0;
  fprintf(stderr, "  no openssl CLI or TLS setup failed: %s\n",
          getenv("CI") ? "failing" : "skipped");
  return 1;
}

TEST(tls_verified_and_kept_alive)
{
  struct http *h = http_new();
  char u[128], ca[600];
  struct http_req rq = {.url = u, .body = "b", .body_len = 1, .timeout_ms = 10000};
  struct http_resp rs;

  if (tls_skip()) {
    ASSERT(!getenv("CI"));
    http_free(h);
    return;
  }
  snprintf(u, sizeof u, "https://localhost:%d/tls", g_tls[0].port);
  set_mode(M_ECHO);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
    ASSERT_STREQ(buf_str(&rs.body), "POST /tls b");
    http_resp_release(&rs);
  }
  ASSERT_EQ(http_connects(h), 1);
  set_mode(M_CHUNKED);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "hello world");
  http_resp_release(&rs);
  /* The server closes the kept connection: a new one, transparently. */
  set_mode(M_CLOSE_AFTER);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  http_resp_release(&rs);
  tu_sleep_ms(100);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_EQ(rs.status, 200);
  http_resp_release(&rs);
  ASSERT_EQ(http_connects(h), 2);
  http_free(h);

  /* A handle with its own CA file. */
  h = http_new();
  snprintf(ca, sizeof ca, "%s/ca.crt", g_dir[1]);
  ASSERT_EQ(http_set_ca_file(h, ca), ERR_OK);
  snprintf(u, sizeof u, "https://localhost:%d/own", g_tls[1].port);
  set_mode(M_ECHO);
  ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
  ASSERT_STREQ(buf_str(&rs.body), "POST /own b");
  http_resp_release(&rs);
  http_free(h);
}

/* Expects url to fail verification with h, nothing reaching the server. */
static int tls_refused(struct http *h, const char *url)
{
  struct http_req rq = {.url = url, .timeout_ms = 10000};
  struct http_resp rs;
  enum err e;

  set_mode(M_ECHO);
  e = http_do(h, &rq, &rs);
  http_resp_release(&rs);
  if (e != ERR_NET || !strstr(http_errstr(h), "not trusted") || strstr(http_errstr(h), "SECRET") ||
      requests() != 0) {
    fprintf(stderr, "  %s: %s, '%s', %d requests\n", url, err_name(e), http_errstr(h), requests());
    return 0;
  }
  return 1;
}

TEST(tls_wrong_name_or_untrusted_fails)
{
  struct http *h = http_new();
  char u[128], ca[600];

  if (tls_skip()) {
    ASSERT(!getenv("CI"));
    http_free(h);
    return;
  }
  /* The certificate is for localhost, not for 127.0.0.1. */
  snprintf(u, sizeof u, "https://127.0.0.1:%d/botSECRET/x", g_tls[0].port);
  ASSERT(tls_refused(h, u));
  ASSERT_CONTAINS(http_errstr(h), "CN");
  /* A CA that is not in the bundle. */
  snprintf(u, sizeof u, "https://localhost:%d/botSECRET/x", g_tls[1].port);
  ASSERT(tls_refused(h, u));
  http_free(h);

  /* Own CA file: the other CA's server, and the wrong name. */
  h = http_new();
  snprintf(ca, sizeof ca, "%s/ca.crt", g_dir[1]);
  ASSERT_EQ(http_set_ca_file(h, ca), ERR_OK);
  snprintf(u, sizeof u, "https://localhost:%d/botSECRET/x", g_tls[0].port);
  ASSERT(tls_refused(h, u));
  snprintf(u, sizeof u, "https://127.0.0.1:%d/botSECRET/x", g_tls[1].port);
  ASSERT(tls_refused(h, u));
  http_free(h);

  /* A CA file that is not one. */
  h = http_new();
  ASSERT_EQ(http_set_ca_file(h, "/nonexistent/ca.pem"), ERR_IO);
  http_free(h);
}

/* The bundle is re-read at each new connection (only an index of it is kept):
 * rewritten since, with the CA at another place, or without it. */
TEST(tls_bundle_rewritten)
{
  struct http *h;
  char u[128], cmd[3000];
  struct http_req rq = {.url = u, .timeout_ms = 10000};
  struct http_resp rs;

  if (tls_skip()) {
    ASSERT(!getenv("CI"));
    return;
  }
  snprintf(u, sizeof u, "https://localhost:%d/x", g_tls[0].port);
  set_mode(M_ECHO);
  snprintf(cmd, sizeof cmd, "cat '%s/ca.crt' '%s/ca.crt' /etc/ssl/certs/ca-certificates.crt > "
           "'%s/bundle.new' 2>/dev/null; mv '%s/bundle.new' '%s/bundle.pem'",
           g_dir[1], g_dir[0], g_dir[0], g_dir[0], g_dir[0]);
  ASSERT_EQ(system(cmd), 0);
  /* Twice: the second connection reads the bundle the first indexed again. */
  for (int i = 0; i < 2; i++) {
    h = http_new();
    ASSERT_EQ(http_do(h, &rq, &rs), ERR_OK);
    ASSERT_EQ(rs.status, 200);
    http_resp_release(&rs);
    http_free(h);
  }
  snprintf(cmd, sizeof cmd, "cp '%s/ca.crt' '%s/bundle.new' && mv '%s/bundle.new' '%s/bundle.pem'",
           g_dir[1], g_dir[0], g_dir[0], g_dir[0]);
  ASSERT_EQ(system(cmd), 0);
  h = http_new();
  ASSERT(tls_refused(h, u));
  http_free(h);
}

/* One request to url with h; 1 when it was answered 200. */
static int tls_get(struct http *h, const char *url)
{
  struct http_req rq = {.url = url, .timeout_ms = 10000};
  struct http_resp rs;
  int ok;

  set_mode(M_ECHO);
  ok = http_do(h, &rq, &rs) == ERR_OK && rs.status == 200;
  if (!ok)
    fprintf(stderr, "  %s: %s\n", url, http_errstr(h));
  http_resp_release(&rs);
  return ok;
}

/* A session made by one handle (one process) is resumed by the next one
 * through the session file; a file others can read is not used; a session
 * is offered only to the server it was made with; a server that cannot
 * resume it gets a full handshake, chain checked. */
TEST(tls_session_resumed_by_the_next_handle)
{
  char u[128], path[700], cmd[1600];
  struct http *h;
  struct stat st;
  int port, before;
  struct ft_relay other;

  if (tls_skip()) {
    ASSERT(!getenv("CI"));
    return;
  }
  snprintf(path, sizeof path, "%s/tg.tls", g_dir[0]);
  unlink(path);
  port = g_tls[0].port;
  snprintf(u, sizeof u, "https://localhost:%d/s", port);
  before = g_tls[0].resumed;
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_get(h, u));
  http_free(h);
  ASSERT_EQ(g_tls[0].resumed, before);
  ASSERT_EQ(stat(path, &st), 0);
  ASSERT_EQ(st.st_mode & 0777, 0600);

  /* The next handle resumes, and again after the server closed it. */
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_get(h, u));
  ASSERT_EQ(g_tls[0].resumed, before + 1);
  http_close(h);
  ASSERT(tls_get(h, u));
  ASSERT_EQ(g_tls[0].resumed, before + 2);
  http_free(h);

  /* The trusted bundle changed (here only its time): a full handshake,
   * checked against it; the session it makes is resumed next. */
  {
    struct timespec when[2] = {{0, UTIME_OMIT}, {1234567, 0}};
    snprintf(cmd, sizeof cmd, "%s/bundle.pem", g_dir[0]);
    ASSERT_EQ(utimensat(AT_FDCWD, cmd, when, 0), 0);
  }
  for (int i = 0; i < 2; i++) {
    h = http_new();
    ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
    ASSERT(tls_get(h, u));
    http_free(h);
    ASSERT_EQ(g_tls[0].resumed, before + 2 + i);
  }
  before++;

  /* Readable by others: ignored (a full handshake), then replaced by one
   * that is not. */
  ASSERT_EQ(chmod(path, 0644), 0);
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_get(h, u));
  http_free(h);
  ASSERT_EQ(g_tls[0].resumed, before + 2);
  ASSERT_EQ(stat(path, &st), 0);
  ASSERT_EQ(st.st_mode & 0777, 0600);

  /* Garbage in the file: a full handshake, no crash. */
  snprintf(cmd, sizeof cmd, "printf 'skynet-tls-session 1\nlocalhost:%d system-ca\n9999999999"
           "\nxx' > '%s'; chmod 600 '%s'", port, path, path);
  ASSERT_EQ(system(cmd), 0);
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_get(h, u));
  http_free(h);
  ASSERT_EQ(g_tls[0].resumed, before + 2);

  /* Another server (port) is not offered the session. */
  before = g_tls[1].resumed;
  h = http_new();
  snprintf(cmd, sizeof cmd, "%s/ca.crt", g_dir[1]);
  ASSERT_EQ(http_set_ca_file(h, cmd), ERR_OK);
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  snprintf(u, sizeof u, "https://localhost:%d/s", g_tls[1].port);
  ASSERT(tls_get(h, u));
  http_free(h);
  ASSERT_EQ(g_tls[1].resumed, before);

  /* The server at the session's port replaced by one that cannot resume it
   * and whose CA is not trusted: the full handshake's chain is refused. */
  snprintf(u, sizeof u, "https://localhost:%d/s", port);
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_get(h, u));        /* a fresh session for port, in the file */
  http_free(h);
  ft_stop(&g_tls[0]);
  ASSERT_EQ(ft_start_on(&other, g_dir[1], g_srv.port, port), 0);
  h = http_new();
  ASSERT_EQ(http_set_session_file(h, path), ERR_OK);
  ASSERT(tls_refused(h, u));
  http_free(h);
  ASSERT_EQ(other.resumed, 0);
  ft_stop(&other);
  /* Back as it was, for the tests that follow. */
  ASSERT_EQ(ft_start_on(&g_tls[0], g_dir[0], g_srv.port, port), 0);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  if (fh_start(&g_srv, serve, NULL, 1 << 20)) {
    fprintf(stderr, "cannot start the fake server\n");
    return 2;
  }
  RUN(get_post_and_headers);
  RUN(keep_alive_reuses_one_connection);
  RUN(server_closing_idle_connections);
  RUN(reset_mid_answer_is_an_error_and_not_resent);
  RUN(chunked_and_until_close);
  RUN(timeouts_and_cancel);
  RUN(cancel_hook);
  RUN(oversized_answers_are_refused);
  RUN(multipart_upload);
  RUN(errors_never_show_the_path);
  RUN(localhost_by_name);
  RUN(ipv6_literal);
  RUN(proxy_connect_and_no_proxy);
  tls_setup();
  RUN(tls_verified_and_kept_alive);
  RUN(tls_wrong_name_or_untrusted_fails);
  RUN(tls_session_resumed_by_the_next_handle);
  RUN(tls_bundle_rewritten);
  tu_rmrf(g_dir[0]);
  tu_rmrf(g_dir[1]);
  return test_summary();
}
