/* tests/harness.h — the one test harness.  Asserts never compile out.
 *
 *   TEST(name) { ASSERT_EQ(1, 1); }
 *   int main(void) { RUN(name); return test_summary(); }
 *
 * Each program prints "N passed, N failed" and exits non-zero on a failure. */
#ifndef SKYNET_TEST_HARNESS_H
#define SKYNET_TEST_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_, test_failed_, test_cur_failed_;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                   \
  do {                                                              \
    test_cur_failed_ = 0;                                           \
    test_##name();                                                  \
    if (test_cur_failed_) {                                         \
      test_failed_++;                                               \
      fprintf(stderr, "FAIL %s\n", #name);                          \
    } else {                                                        \
      test_passed_++;                                               \
      fprintf(stderr, "ok   %s\n", #name);                          \
    }                                                               \
  } while (0)

#define FAIL_AT_(fmt, ...)                                          \
  do {                                                              \
    fprintf(stderr, "  %s:%d: " fmt "\n", __FILE__, __LINE__,       \
            __VA_ARGS__);                                           \
    test_cur_failed_ = 1;                                           \
    return;                                                         \
  } while (0)

#define ASSERT(cond)                                                \
  do {                                                              \
    if (!(cond))                                                    \
      FAIL_AT_("assertion failed: %s", #cond);                      \
  } while (0)

#define ASSERT_EQ(a, b)                                             \
  do {                                                              \
    long long a_ = (long long)(a), b_ = (long long)(b);             \
    if (a_ != b_)                                                   \
      FAIL_AT_("%s == %s: %lld != %lld", #a, #b, a_, b_);           \
  } while (0)

#define ASSERT_STREQ(a, b)                                          \
  do {                                                              \
    const char *a_ = (a), *b_ = (b);                                \
    if (!a_ || !b_ || strcmp(a_, b_) != 0)                          \
      FAIL_AT_("%s == %s: \"%s\" != \"%s\"", #a, #b,                \
               a_ ? a_ : "(null)", b_ ? b_ : "(null)");             \
  } while (0)

#define ASSERT_CONTAINS(hay, needle)                                \
  do {                                                              \
    const char *h_ = (hay), *n_ = (needle);                         \
    if (!h_ || !strstr(h_, n_))                                     \
      FAIL_AT_("%s contains \"%s\": got \"%s\"", #hay, n_,          \
               h_ ? h_ : "(null)");                                 \
  } while (0)

static inline int test_summary(void)
{
  printf("%d passed, %d failed\n", test_passed_, test_failed_);
  return test_failed_ ? 1 : 0;
}

#endif
