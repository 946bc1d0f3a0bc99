/* The artifact store: SHA-256 by mbedtls against known vectors, content
 * stored once under its hash, the size limit with a clear error, files
 * that are missing or not regular, and the ledger row. */
#include <sys/stat.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../testutil.h"
#include "engine/archive.h"
#include "engine/log.h"

static char g_dir[512], g_home[600];

static void write_file(const char *path, const char *data, size_t n)
{
  FILE *f = fopen(path, "w");

  if (f) {
    fwrite(data, 1, n, f);
    fclose(f);
  }
}

static char *slurp(const char *path, size_t *n)
{
  static char buf[4096];
  FILE *f = fopen(path, "r");

  if (!f)
    return NULL;
  *n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return buf;
}

TEST(sha256_known_vectors)
{
  char hex[65];

  archive_sha256_hex("abc", 3, hex);
  ASSERT_STREQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  archive_sha256_hex("", 0, hex);
  ASSERT_STREQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(file_stored_under_its_hash_once)
{
  char src[700], src2[700], sha[65], sha2[65], err[400], *p, *data;
  int64_t size;
  size_t n;

  snprintf(src, sizeof src, "%s/report.txt", g_dir);
  snprintf(src2, sizeof src2, "%s/copy.txt", g_dir);
  write_file(src, "abc", 3);
  write_file(src2, "abc", 3);
  ASSERT_EQ(archive_put_file(g_home, 1000, src, sha, &size, err, sizeof err), ERR_OK);
  ASSERT_STREQ(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_EQ(size, 3);
  ASSERT_EQ(archive_put_file(g_home, 1000, src2, sha2, &size, err, sizeof err), ERR_OK);
  ASSERT_STREQ(sha2, sha);
  p = archive_path(g_home, sha);
  ASSERT(p != NULL);
  data = slurp(p, &n);
  ASSERT(data != NULL);
  ASSERT_EQ(n, 3);
  ASSERT(memcmp(data, "abc", 3) == 0);
  free(p);
  /* one file in the store, no temp files left */
  snprintf(src, sizeof src, "%s/artifacts", g_home);
  DIR *d = opendir(src);
  struct dirent *e;
  int files = 0;
  while (d && (e = readdir(d)))
    files += e->d_name[0] != '.' || strncmp(e->d_name, ".tmp", 4) == 0;
  if (d)
    closedir(d);
  ASSERT_EQ(files, 1);
  ASSERT(archive_path(g_home, "../../etc/passwd") == NULL);
}

TEST(limits_and_bad_files_are_clear_errors)
{
  char src[700], sha[65], err[400];
  int64_t size;

  snprintf(src, sizeof src, "%s/big.bin", g_dir);
  write_file(src, "0123456789", 10);
  ASSERT_EQ(archive_put_file(g_home, 9, src, sha, &size, err, sizeof err), ERR_TOOBIG);
  ASSERT_CONTAINS(err, "big.bin' is 10 bytes, over the archive.max_bytes limit of 9");
  ASSERT_EQ(archive_put_file(g_home, 10, src, sha, &size, err, sizeof err), ERR_OK);
  snprintf(src, sizeof src, "%s/missing", g_dir);
  ASSERT_EQ(archive_put_file(g_home, 10, src, sha, &size, err, sizeof err), ERR_NOTFOUND);
  ASSERT_CONTAINS(err, "cannot open artifact");
  ASSERT_CONTAINS(err, "No such file");
  ASSERT_EQ(archive_put_file(g_home, 10, g_dir, sha, &size, err, sizeof err), ERR_INVAL);
  ASSERT_CONTAINS(err, "is not a regular file");
  ASSERT_EQ(archive_put_file(g_home, 10, "/dev/zero", sha, &size, err, sizeof err), ERR_INVAL);
}

TEST(keep_records_in_the_ledger)
{
  char url[700], src[700], err[400];
  struct ledger *l;
  struct job j = {0};
  struct artifact a, *v;
  size_t n;

  snprintf(url, sizeof url, "sqlite://%s/ledger.db", g_dir);
  l = tu_ledger_open(url);
  ASSERT(l != NULL);
  j.channel = "console";
  j.text = "t";
  ASSERT_EQ(l->ops->job_create(l, &j, "test"), ERR_OK);
  snprintf(src, sizeof src, "%s/out.log", g_dir);
  write_file(src, "hello\n", 6);
  ASSERT_EQ(archive_keep(g_home, 100, l, j.id, 2, src, &a, err, sizeof err), ERR_OK);
  ASSERT_EQ(l->ops->artifact_list(l, j.id, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].name, src);
  ASSERT_EQ(v[0].size, 6);
  ASSERT_EQ(v[0].step, 2);
  ASSERT_STREQ(v[0].sha256, a.sha256);
  artifact_list_free(v, n);
  ASSERT_EQ(archive_keep(g_home, 5, l, j.id, 2, src, &a, err, sizeof err), ERR_TOOBIG);
  ASSERT_EQ(l->ops->artifact_list(l, j.id, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  artifact_list_free(v, n);
  ledger_close(l);
}

int main(void)
{
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_home, sizeof g_home, "%s/home", g_dir);
  mkdir(g_home, 0700);
  RUN(sha256_known_vectors);
  RUN(file_stored_under_its_hash_once);
  RUN(limits_and_bad_files_are_clear_errors);
  RUN(keep_records_in_the_ledger);
  tu_rmrf(g_dir);
  return test_summary();
}
