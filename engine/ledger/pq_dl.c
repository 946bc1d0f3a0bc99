/* engine/ledger/pq_dl.c — see pq_dl.h. */
#include "pq_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#ifndef PQ_DL_LIB
#define PQ_DL_LIB "libpq.so.5"
#endif

struct pq_dl_table pq_dl;

static pthread_once_t pq_dl_once = PTHREAD_ONCE_INIT;
static char pq_dl_why[300];   /* empty when loaded */

static void pq_dl_open(void)
{
  void *lib = dlopen(PQ_DL_LIB, RTLD_NOW | RTLD_LOCAL);
  const char *miss = NULL;

  if (!lib) {
    snprintf(pq_dl_why, sizeof pq_dl_why, "%s", dlerror());
    return;
  }
#define PQ_DL_SYM(name)                                                     \
  if (!(*(void **)&pq_dl.p_##name = dlsym(lib, #name)) && !miss)           \
    miss = #name;
  PQ_DL_FUNCS(PQ_DL_SYM)
#undef PQ_DL_SYM
#define PQ_DL_OPT(name) *(void **)&pq_dl.p_##name = dlsym(lib, #name);
  PQ_DL_OPTIONAL(PQ_DL_OPT)
#undef PQ_DL_OPT
  if (miss)   /* an older libpq than the header: keep it loaded, refuse to use it */
    snprintf(pq_dl_why, sizeof pq_dl_why, "%s has no %s", PQ_DL_LIB, miss);
}

enum err pq_dl_load(char *errbuf, size_t errlen)
{
  pthread_once(&pq_dl_once, pq_dl_open);
  if (!pq_dl_why[0])
    return ERR_OK;
  snprintf(errbuf, errlen, "PostgreSQL support needs libpq5 (%s): %s", PQ_DL_LIB, pq_dl_why);
  return ERR_UNAVAILABLE;
}
