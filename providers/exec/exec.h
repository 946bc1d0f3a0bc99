/* providers/exec/exec.h — execution providers.
 *
 * One const struct exec_backend per backend (local, mock, later sandbox, ssh,
 * docker, gateway); a configured instance (struct exec_instance) is made from
 * a cfg_provider by backend->create.  Backends never include each other.
 *
 * Thread contract: run() and health() may be called from several threads at
 * once on one instance; create/destroy from one thread while nobody runs.
 * Cancellation: any thread sets *req->cancel to non-zero; run() notices within
 * about 50 ms, stops the whole process group (TERM, then KILL after
 * grace_ms) and returns ERR_CANCELLED. */
#ifndef SKYNET_EXEC_H
#define SKYNET_EXEC_H

#include <stdatomic.h>
#include <stddef.h>

#include "../../engine/config.h"
#include "../../engine/err.h"

struct exec_request {
  const char *const *argv;   /* NULL-terminated, argv[0] looked up in PATH */
  const char *cwd;           /* NULL → the instance's working directory */
  const char *stdin_data;    /* NULL → /dev/null */
  size_t stdin_len;
  const char *const *env;    /* extra NAME=VALUE after scrubbing; may be NULL */
  int timeout_ms;            /* 0 → none */
  int grace_ms;              /* TERM → KILL; 0 → 2000 */
  size_t capture_max;        /* bytes of the output tail kept; 0 → 65536 */
  atomic_int *cancel;        /* may be NULL */
  /* Every chunk of output as it arrives (stdout and stderr interleaved);
   * called on the running thread; may be NULL. */
  void (*on_output)(void *ud, const char *data, size_t n);
  void *ud;
  /* For isolating backends (sandbox): host directories the step may write
   * besides its workspace (NULL-terminated, may be NULL), and whether it
   * needs the network.  Others ignore both. */
  const char *const *writable;
  int network;
};

struct exec_result {
  int exit_code;        /* exit status, or 128+signal when killed by one */
  int term_signal;      /* the signal that ended it, 0 if it exited */
  int timed_out;        /* the command timeout fired */
  int cancelled;        /* *cancel was set */
  char *output;         /* NUL-terminated tail of stdout+stderr; owned */
  size_t output_len;
  size_t output_total;  /* bytes produced in all */
  int truncated;        /* output_total > output_len */
  long duration_ms;
  char error[256];      /* why it could not run (exec failure, ...) */
};

struct exec_health {
  int ok;
  char detail[256];
};

struct exec_backend;

/* Base of every instance; backends embed it first. */
struct exec_instance {
  const struct exec_backend *backend;
  char name[64];
};

struct exec_backend {
  const char *name;
  enum err (*create)(const struct cfg *cfg, const struct cfg_provider *p,
                     struct exec_instance **out);
  /* Runs one command to its end.  Returns ERR_OK when the command ran
   * (whatever its exit code), ERR_TIMEOUT, ERR_CANCELLED, or another error
   * with res->error filled.  res is always filled and must be released. */
  enum err (*run)(struct exec_instance *inst, const struct exec_request *req,
                  struct exec_result *res);
  enum err (*health)(struct exec_instance *inst, struct exec_health *out);
  void (*destroy)(struct exec_instance *inst);
};

extern const struct exec_backend exec_local, exec_mock;
extern const struct exec_backend exec_sandbox, exec_ssh, exec_docker,
    exec_gateway;

/* Backend by type name ("local"), or NULL. */
const struct exec_backend *exec_backend_find(const char *type);
void exec_result_release(struct exec_result *res);

#endif
