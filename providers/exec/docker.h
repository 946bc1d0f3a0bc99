/* providers/exec/docker.h — what the docker backend exposes beyond its
 * struct exec_backend: the command construction, for tests. */
#ifndef SKYNET_EXEC_DOCKER_H
#define SKYNET_EXEC_DOCKER_H

#include <stddef.h>

#include "exec.h"

/* The settings one "docker run" is built from; strings are borrowed. */
struct exec_docker_spec {
  const char *docker;      /* the CLI, "docker" */
  const char *name;        /* container name, for cleanup */
  const char *image;
  const char *network;     /* "none" unless allowed */
  const char *memory;      /* "512m" */
  const char *cpus;        /* "1" */
  const char *workspace;   /* host dir mounted at /work, or NULL */
  const char *workdir;     /* inside the container; NULL → /work */
  const char *const *env;  /* NAME=VALUE each passed with -e; may be NULL */
  int interactive;         /* -i: stdin is passed */
};

/* Fills v (room for n entries) with the docker run command line for argv,
 * NULL-terminated; the strings are borrowed from spec, argv and mount (room
 * for the -v value, mount_len bytes).  Returns ERR_TOOBIG when it does not
 * fit.  Any thread. */
enum err exec_docker_argv(const struct exec_docker_spec *spec,
                          const char *const *argv, const char **v, size_t n,
                          char *mount, size_t mount_len);

#endif
