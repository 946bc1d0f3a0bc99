/* engine/libm_dl.c — libm loaded on first use, for the statically linked SQLite.
 *
 * DESIGN
 * Debian's libsqlite3.a is built with SQLite's SQL math functions (acos(),
 * pow(), ...) and FTS5, whose bm25() calls log(); they are the only users of
 * libm in skynet (checked with ld --trace-symbol), and skynet's own SQL calls
 * none of them.  Linked as usual, libm.so.6 is mapped and relocated at every
 * start and keeps ~320 KB resident in an idle bot for functions it never
 * calls.  This file defines those functions in the program itself, so the
 * linker (--as-needed) drops libm; the first call of any of them dlopen()s
 * libm.so.6 and every call goes to libm's own function, so results are
 * exactly libm's.  Linked into the skynet program only (see CMakeLists.txt):
 * the test programs use libm as usual.
 *
 * Thread contract: callable from any thread (pthread_once, then read-only
 * function pointers published with release/acquire atomics). */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>

/* Every libm function that libsqlite3.a references: one argument, two. */
#define LIBM_DL_1(X) \
  X(acos) X(acosh) X(asin) X(asinh) X(atan) X(atanh) X(cos) X(cosh) X(exp) X(log) \
  X(sin) X(sinh) X(sqrt) X(tan) X(tanh) X(trunc)
#define LIBM_DL_2(X) X(atan2) X(fmod) X(pow)

static pthread_once_t libm_once = PTHREAD_ONCE_INIT;
static void *libm_handle;

static void libm_open(void)
{
  if (!(libm_handle = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL)))
    fprintf(stderr, "skynet: cannot load libm.so.6 for an SQL math function: %s\n", dlerror());
}

/* libm's function called name; NULL (the caller returns NaN) if libm cannot be loaded. */
static void *libm_sym(void *const *slot, const char *name)
{
  void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

  if (f)
    return f;
  pthread_once(&libm_once, libm_open);
  f = libm_handle ? dlsym(libm_handle, name) : NULL;
  __atomic_store_n((void **)slot, f, __ATOMIC_RELEASE);
  return f;
}

#define LIBM_DEF_1(fn)                                                  \
  static void *libm_p_##fn;                                             \
  double fn(double x)                                                   \
  {                                                                     \
    double (*f)(double) = (double (*)(double))libm_sym(&libm_p_##fn, #fn); \
    return f ? f(x) : NAN;                                              \
  }
#define LIBM_DEF_2(fn)                                                  \
  static void *libm_p_##fn;                                             \
  double fn(double x, double y)                                         \
  {                                                                     \
    double (*f)(double, double) =                                       \
        (double (*)(double, double))libm_sym(&libm_p_##fn, #fn);        \
    return f ? f(x, y) : NAN;                                           \
  }

LIBM_DL_1(LIBM_DEF_1)
LIBM_DL_2(LIBM_DEF_2)
