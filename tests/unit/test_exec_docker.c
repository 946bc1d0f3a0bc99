/* tests/unit/test_exec_docker.c — the docker backend: its command line, and
 * runs against a fake "docker" shell script put first in the PATH of the
 * instance (no Docker engine is needed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "providers/exec/docker.h"
#include "tests/harness.h"

static char dir[64], path_opt[128];

/* The shim logs every call to calls.log; "run" prints its argv after the
 * image and sleeps when asked; "info" works only when engine_up exists. */
static const char shim[] =
  "#!/bin/sh\n"
  "d=$(dirname \"$0\")\n"
  "echo \"$*\" >> \"$d/calls.log\"\n"
  "case \"$1\" in\n"
  "info) [ -e \"$d/engine_up\" ] && { echo 24.0.7; exit 0; }\n"
  "  echo 'Cannot connect to the Docker daemon' >&2; exit 1;;\n"
  "rm) exit 0;;\n"
  "run) [ -e \"$d/engine_up\" ] || "
  "{ echo 'docker: Cannot connect to the Docker daemon.' >&2; exit 125; }\n"
  "  while [ \"$1\" != -- ]; do shift; done; shift 2\n"
  "  [ \"$1\" = sleep ] && exec sleep \"$2\"\n"
  "  echo \"in-container: $*\"; exit 4;;\n"
  "esac\n"
  "exit 2\n";

static struct exec_instance *make_inst(const char *image, const char *net)
{
  struct cfg_kv opts[] = {
    {"image", (char *)image}, {"path", path_opt}, {"memory", "256m"},
    {"cpus", "0.5"}, {"workspace", dir}, {"network", (char *)net},
  };
  struct cfg_provider p = {"box", "docker", opts, net ? 6 : 5};
  struct exec_instance *inst = NULL;

  if (exec_docker.create(NULL, &p, &inst) != ERR_OK)
    return NULL;
  return inst;
}

static int read_log(char *out, size_t len)
{
  char p[128];
  FILE *f;
  size_t n;

  snprintf(p, sizeof p, "%s/calls.log", dir);
  f = fopen(p, "r");
  if (!f)
    return -1;
  n = fread(out, 1, len - 1, f);
  out[n] = 0;
  fclose(f);
  unlink(p);
  return 0;
}

static void engine(int up)
{
  char p[128];

  snprintf(p, sizeof p, "%s/engine_up", dir);
  if (up)
    fclose(fopen(p, "w"));
  else
    unlink(p);
}

static char *join(const char *const *v, char *out, size_t len)
{
  size_t k = 0;

  out[0] = 0;
  for (; *v; v++)
    k += (size_t)snprintf(out + k, len - k, "%s%s", k ? " " : "", *v);
  return out;
}

TEST(argv_construction)
{
  struct exec_docker_spec spec = {
    .docker = "docker", .name = "skynet-1", .image = "debian:12",
    .network = "none", .memory = "512m", .cpus = "1",
    .workspace = "/srv/ws", .interactive = 0,
  };
  const char *argv[] = {"df", "-h", NULL};
  const char *v[40];
  char mount[64], s[512];

  ASSERT_EQ(exec_docker_argv(&spec, argv, v, 40, mount, sizeof mount), ERR_OK);
  ASSERT_STREQ(join(v, s, sizeof s),
               "docker run --rm --name skynet-1 --network none --memory 512m "
               "--cpus 1 -v /srv/ws:/work -w /work -- debian:12 df -h");
  spec.workspace = NULL;
  spec.interactive = 1;
  ASSERT_EQ(exec_docker_argv(&spec, argv, v, 40, mount, sizeof mount), ERR_OK);
  ASSERT_STREQ(join(v, s, sizeof s),
               "docker run --rm --name skynet-1 --network none --memory 512m "
               "--cpus 1 -w /work -i -- debian:12 df -h");
  ASSERT_EQ(exec_docker_argv(&spec, argv, v, 10, mount, sizeof mount),
            ERR_TOOBIG);
  {
    const char *env[] = {"A=1", "B=x y", NULL};

    spec.env = env;
    spec.workdir = "/src";
    spec.interactive = 0;
    ASSERT_EQ(exec_docker_argv(&spec, argv, v, 40, mount, sizeof mount),
              ERR_OK);
    ASSERT_STREQ(join(v, s, sizeof s),
                 "docker run --rm --name skynet-1 --network none --memory "
                 "512m --cpus 1 -e A=1 -e B=x y -w /src -- debian:12 df -h");
  }
}

TEST(run_through_shim)
{
  struct exec_instance *inst = make_inst("debian:12", NULL);
  const char *argv[] = {"echo", "a b", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000};
  struct exec_result res;
  char log[2048];

  ASSERT(inst);
  engine(1);
  ASSERT_EQ(exec_docker.run(inst, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 4);
  ASSERT_STREQ(res.output, "in-container: echo a b\n");
  exec_result_release(&res);
  ASSERT_EQ(read_log(log, sizeof log), 0);
  ASSERT_CONTAINS(log, "run --rm --name skynet-");
  ASSERT_CONTAINS(log, "--network none --memory 256m --cpus 0.5 -v ");
  ASSERT_CONTAINS(log, ":/work -w /work -- debian:12 echo a b");
  exec_docker.destroy(inst);
}

TEST(network_allowed)
{
  struct exec_instance *inst = make_inst("alpine", "true");
  const char *argv[] = {"true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000};
  struct exec_result res;
  char log[2048];

  ASSERT(inst);
  engine(1);
  ASSERT_EQ(exec_docker.run(inst, &req, &res), ERR_OK);
  exec_result_release(&res);
  ASSERT_EQ(read_log(log, sizeof log), 0);
  ASSERT_CONTAINS(log, "--network bridge");
  exec_docker.destroy(inst);
}

TEST(timeout_removes_container)
{
  struct exec_instance *inst = make_inst("debian:12", NULL);
  const char *argv[] = {"sleep", "30", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 1500,
                             .grace_ms = 200};
  struct exec_result res;
  char log[2048], name[64], *p, *end;

  ASSERT(inst);
  engine(1);
  ASSERT_EQ(exec_docker.run(inst, &req, &res), ERR_TIMEOUT);
  exec_result_release(&res);
  ASSERT_EQ(read_log(log, sizeof log), 0);
  p = strstr(log, "--name ");
  ASSERT(p);
  p += 7;
  end = strchr(p, ' ');
  ASSERT(end && (size_t)(end - p) < sizeof name);
  snprintf(name, sizeof name, "rm -f %.*s\n", (int)(end - p), p);
  ASSERT_CONTAINS(log, name);
  exec_docker.destroy(inst);
}

TEST(no_engine_unavailable)
{
  struct exec_instance *inst = make_inst("debian:12", NULL);
  const char *argv[] = {"true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000};
  struct exec_result res;
  struct exec_health h;
  char log[2048];

  ASSERT(inst);
  engine(0);
  ASSERT_EQ(exec_docker.health(inst, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  ASSERT_CONTAINS(h.detail, "unavailable");
  ASSERT_CONTAINS(h.detail, "Cannot connect");
  ASSERT_EQ(exec_docker.run(inst, &req, &res), ERR_UNAVAILABLE);
  ASSERT_CONTAINS(res.error, "Cannot connect to the Docker daemon");
  exec_result_release(&res);
  engine(1);
  ASSERT_EQ(exec_docker.health(inst, &h), ERR_OK);
  ASSERT_EQ(h.ok, 1);
  read_log(log, sizeof log);
  exec_docker.destroy(inst);
}

TEST(config_and_table)
{
  struct cfg_provider p = {"x", "docker", NULL, 0};
  struct exec_instance *inst = NULL;

  ASSERT_EQ(exec_docker.create(NULL, &p, &inst), ERR_CONFIG);   /* no image */
  ASSERT(exec_backend_find("docker") == &exec_docker);
}

int main(void)
{
  char p[128];
  FILE *f;

  snprintf(dir, sizeof dir, "/tmp/skynet-dockertest-XXXXXX");
  if (!mkdtemp(dir))
    return 1;
  snprintf(path_opt, sizeof path_opt, "%s:/usr/bin:/bin", dir);
  snprintf(p, sizeof p, "%s/docker", dir);
  f = fopen(p, "w");
  if (!f || fputs(shim, f) < 0 || fclose(f) != 0 || chmod(p, 0755) != 0)
    return 1;
  RUN(argv_construction);
  RUN(config_and_table);
  RUN(run_through_shim);
  RUN(network_allowed);
  RUN(timeout_removes_container);
  RUN(no_engine_unavailable);
  snprintf(p, sizeof p, "rm -rf '%s'", dir);
  if (system(p) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return test_summary();
}
