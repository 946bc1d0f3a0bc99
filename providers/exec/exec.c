/* providers/exec/exec.c — the table of execution backends and the helpers
 * every backend shares.  Backends are listed here, and only here, so that
 * adding one (sandbox, ssh, ...) is one line in this table. */
#include "exec.h"

#include <stdlib.h>
#include <string.h>

static const struct exec_backend *const exec_backends[] = {
  &exec_local,
  &exec_mock,
  &exec_sandbox,
  &exec_ssh,
  &exec_docker,
  &exec_gateway,
};

const struct exec_backend *exec_backend_find(const char *type)
{
  size_t i;

  if (!type)
    return NULL;
  for (i = 0; i < sizeof(exec_backends) / sizeof(exec_backends[0]); i++)
    if (strcmp(exec_backends[i]->name, type) == 0)
      return exec_backends[i];
  return NULL;
}

void exec_result_release(struct exec_result *res)
{
  if (!res)
    return;
  free(res->output);
  res->output = NULL;
  res->output_len = 0;
}
