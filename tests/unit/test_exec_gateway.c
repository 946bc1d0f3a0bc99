/* tests/unit/test_exec_gateway.c — the gateway backend against a fake
 * gateway: a thread serving HTTP on 127.0.0.1 (one connection at a time). */
#include <arpa/inet.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "providers/exec/exec.h"
#include "tests/harness.h"

#define TOKEN "s3cret-token"

static int srv_fd;
static char url[64];
static char last_body[8192], last_auth[256];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Reads a request: headers, then Content-Length bytes of body. */
static int read_request(int fd, char *req, size_t len, char **body)
{
  size_t n = 0, want = 0;
  char *end = NULL, *cl;
  ssize_t r;

  while (n < len - 1) {
    r = read(fd, req + n, len - 1 - n);
    if (r <= 0)
      return -1;
    n += (size_t)r;
    req[n] = 0;
    if (!end && (end = strstr(req, "\r\n\r\n"))) {
      cl = strcasestr(req, "Content-Length:");
      want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    }
    if (end && n >= (size_t)(end + 4 - req) + want)
      break;
  }
  *body = end ? end + 4 : req + n;
  return end ? 0 : -1;
}

static void answer(int fd, int status, const char *body)
{
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   status, strlen(body));

  if (write(fd, head, (size_t)n) < 0 || write(fd, body, strlen(body)) < 0)
    return;
}

/* The fake: 401 without the token; /v1/health → 200; /v1/execute echoes
 * argv joined as output with exit code 3, "sleep" → no answer for 3 s,
 * "garbage" → not JSON. */
static void serve_one(int fd)
{
  static char req[16384];
  char *body, *auth;
  const char *out;

  if (read_request(fd, req, sizeof req, &body) < 0)
    return;
  auth = strcasestr(req, "Authorization: ");
  pthread_mutex_lock(&mu);
  snprintf(last_body, sizeof last_body, "%s", body);
  snprintf(last_auth, sizeof last_auth, "%.*s",
           auth ? (int)strcspn(auth, "\r") : 0, auth ? auth : "");
  pthread_mutex_unlock(&mu);
  if (!auth || !strstr(auth, "Bearer " TOKEN "\r")) {
    answer(fd, 401, "{}");
    return;
  }
  if (strncmp(req, "GET /v1/health", 14) == 0) {
    answer(fd, 200, "{\"ok\":true}");
    return;
  }
  if (strstr(body, "\"sleep\"")) {
    sleep(3);
    return;
  }
  out = strstr(body, "\"garbage\"")
            ? "not json"
            : "{\"exit_code\":3,\"output\":\"hello from gateway\\n\"}";
  answer(fd, 200, out);
}

static void *server(void *arg)
{
  int fd;

  (void)arg;
  while ((fd = accept(srv_fd, NULL, NULL)) >= 0) {
    serve_one(fd);
    close(fd);
  }
  return NULL;
}

static struct exec_instance *make_inst(const char *u, const char *token)
{
  struct cfg_kv opts[] = {{"url", (char *)u}, {"token", (char *)token}};
  struct cfg_provider p = {"gw", "gateway", opts, token ? 2 : 1};
  struct exec_instance *inst = NULL;

  if (exec_gateway.create(NULL, &p, &inst) != ERR_OK)
    return NULL;
  return inst;
}

static struct exec_instance *gw;

TEST(execute)
{
  const char *argv[] = {"df", "-h", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000,
                             .cwd = "/srv"};
  struct exec_result res;
  json_object *o, *a;

  ASSERT_EQ(exec_gateway.run(gw, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 3);
  ASSERT_STREQ(res.output, "hello from gateway\n");
  exec_result_release(&res);
  pthread_mutex_lock(&mu);
  o = json_tokener_parse(last_body);
  pthread_mutex_unlock(&mu);
  ASSERT(o);
  ASSERT(json_object_object_get_ex(o, "argv", &a));
  ASSERT_EQ(json_object_array_length(a), 2);
  ASSERT_STREQ(json_object_get_string(json_object_array_get_idx(a, 1)), "-h");
  ASSERT(json_object_object_get_ex(o, "timeout_ms", &a));
  ASSERT_EQ(json_object_get_int(a), 5000);
  json_object_put(o);
  ASSERT_STREQ(last_auth, "Authorization: Bearer " TOKEN);
}

TEST(capture_max_keeps_tail)
{
  const char *argv[] = {"x", NULL};
  struct exec_request req = {.argv = argv, .capture_max = 8};
  struct exec_result res;

  ASSERT_EQ(exec_gateway.run(gw, &req, &res), ERR_OK);
  ASSERT_STREQ(res.output, "gateway\n");
  ASSERT_EQ(res.truncated, 1);
  ASSERT_EQ(res.output_total, 19);
  exec_result_release(&res);
}

TEST(wrong_token_denied)
{
  struct exec_instance *bad = make_inst(url, "nope");
  const char *argv[] = {"true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_result res;
  struct exec_health h;

  ASSERT(bad);
  ASSERT_EQ(exec_gateway.run(bad, &req, &res), ERR_DENIED);
  ASSERT_CONTAINS(res.error, "401");
  exec_result_release(&res);
  ASSERT_EQ(exec_gateway.health(bad, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  exec_gateway.destroy(bad);
}

TEST(malformed_answer)
{
  const char *argv[] = {"garbage", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_result res;

  ASSERT_EQ(exec_gateway.run(gw, &req, &res), ERR_PARSE);
  ASSERT_CONTAINS(res.error, "malformed");
  exec_result_release(&res);
}

static void *cancel_later(void *arg)
{
  usleep(300 * 1000);
  atomic_store((atomic_int *)arg, 1);
  return NULL;
}

/* Runs first: the fake serves one connection at a time and the sleeping
 * request holds it for 3 s. */
TEST(cancel_mid_request)
{
  const char *argv[] = {"sleep", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 60000};
  struct exec_result res;
  atomic_int cancel = 0;
  pthread_t t;

  req.cancel = &cancel;
  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &cancel), 0);
  ASSERT_EQ(exec_gateway.run(gw, &req, &res), ERR_CANCELLED);
  pthread_join(t, NULL);
  ASSERT_EQ(res.cancelled, 1);
  ASSERT(res.duration_ms < 2500);
  exec_result_release(&res);
}

/* timeout_ms plus the round-trip slack, then the transfer is cut */
TEST(timeout)
{
  const char *argv[] = {"sleep", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 200};
  struct exec_result res;

  ASSERT_EQ(exec_gateway.run(gw, &req, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.timed_out, 1);   /* the fake never answers "sleep" */
  exec_result_release(&res);
}

TEST(unreachable_and_health)
{
  struct exec_instance *down = make_inst("http://127.0.0.1:1", TOKEN);
  const char *argv[] = {"true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_result res;
  struct exec_health h;

  ASSERT(down);
  ASSERT_EQ(exec_gateway.run(down, &req, &res), ERR_NET);
  ASSERT_CONTAINS(res.error, "127.0.0.1:1");
  exec_result_release(&res);
  ASSERT_EQ(exec_gateway.health(down, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  exec_gateway.destroy(down);
  ASSERT_EQ(exec_gateway.health(gw, &h), ERR_OK);
  ASSERT_EQ(h.ok, 1);
}

TEST(config)
{
  ASSERT(make_inst("ftp://x", TOKEN) == NULL);
  ASSERT(exec_backend_find("gateway") == &exec_gateway);
}

int main(void)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof a;
  pthread_t t;

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  srv_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(srv_fd, 8) < 0 ||
      getsockname(srv_fd, (struct sockaddr *)&a, &len) < 0)
    return 1;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
  if (pthread_create(&t, NULL, server, NULL) != 0)
    return 1;
  gw = make_inst(url, TOKEN);
  if (!gw)
    return 1;
  RUN(config);
  RUN(execute);
  RUN(capture_max_keeps_tail);
  RUN(wrong_token_denied);
  RUN(malformed_answer);
  RUN(cancel_mid_request);
  RUN(timeout);
  RUN(unreachable_and_health);
  exec_gateway.destroy(gw);
  shutdown(srv_fd, SHUT_RDWR);
  close(srv_fd);
  pthread_join(t, NULL);
  return test_summary();
}
