/* Personas as data: the shipped ones load and render, every template of the
 * table is present in both, and a broken persona file is an error naming
 * the key. */
#include "../harness.h"
#include "../testutil.h"
#include <sys/stat.h>

#include "engine/persona.h"

static char g_dir[256];

static enum err load_text(const char *yaml, char *why, size_t n)
{
  struct persona *p = NULL;
  enum err e = persona_parse(yaml, strlen(yaml), "t.yaml", &p, why, n);
  persona_free(p);
  return e;
}

/* The shipped SKYNET persona with one line replaced. */
static char *skynet_with(const char *from, const char *to)
{
  char path[512], *s, *hit, *out;
  FILE *f;
  long len;

  snprintf(path, sizeof path, "%s/persona/skynet.yaml", SKYNET_SOURCE_DIR);
  if (!(f = fopen(path, "rb")))
    return NULL;
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  rewind(f);
  s = calloc(1, (size_t)len + 1);
  if (fread(s, 1, (size_t)len, f) != (size_t)len) {
    fclose(f);
    free(s);
    return NULL;
  }
  fclose(f);
  if (!(hit = strstr(s, from))) {
    free(s);
    return NULL;
  }
  out = calloc(1, (size_t)len + strlen(to) + 1);
  memcpy(out, s, (size_t)(hit - s));
  strcat(out, to);
  strcat(out, hit + strlen(from));
  free(s);
  return out;
}

TEST(shipped_personas_load_and_render)
{
  struct persona *p;
  char why[256], *t;

  ASSERT_EQ(persona_load("skynet", NULL, &p, why, sizeof why), ERR_OK);
  ASSERT_STREQ(persona_name(p), "SKYNET");
  ASSERT_CONTAINS(persona_system(p), "untrusted");
  t = persona_render(p, "plan", "id", "7", "state", "QUEUED", "risk", "READ_ONLY", "summary",
                     "check", "steps", "1. df", NULL);
  ASSERT_STREQ(t, "#7 QUEUED · risk READ_ONLY\nPlan: check\n1. df");
  free(t);
  t = persona_render(p, "help", NULL);
  ASSERT_CONTAINS(t, "SKYNET online");
  ASSERT(t[strlen(t) - 1] != '\n');
  free(t);
  persona_free(p);

  ASSERT_EQ(persona_load("example", NULL, &p, why, sizeof why), ERR_OK);
  ASSERT_STREQ(persona_name(p), "Jeeves");
  t = persona_render(p, "help", NULL);
  ASSERT_CONTAINS(t, "Jeeves, at your service");
  free(t);
  persona_free(p);
}

TEST(persona_from_home_and_from_a_path)
{
  char path[512], why[256];
  struct persona *p;
  char *yaml = skynet_with("name: SKYNET", "name: Ops");

  ASSERT(yaml);
  snprintf(path, sizeof path, "%s/persona", g_dir);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/persona/ops.yaml", g_dir);
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs(yaml, f);
  fclose(f);
  free(yaml);
  ASSERT_EQ(persona_load("ops", g_dir, &p, why, sizeof why), ERR_OK);
  ASSERT_STREQ(persona_name(p), "Ops");
  persona_free(p);
  ASSERT_EQ(persona_load(path, NULL, &p, why, sizeof why), ERR_OK);
  persona_free(p);
  ASSERT_EQ(persona_load("nosuch", g_dir, &p, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "'nosuch': not found");
  ASSERT_EQ(persona_load("../etc", g_dir, &p, why, sizeof why), ERR_CONFIG);
  ASSERT_EQ(persona_load("/nonexistent/p.yaml", NULL, &p, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "cannot open");
}

TEST(broken_personas_name_the_key)
{
  char why[256], *y;

  y = skynet_with("{{id}} planning", "{{idd}} planning");
  ASSERT(y);
  ASSERT_EQ(load_text(y, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "templates.planning: unknown placeholder {{idd}}");
  free(y);

  y = skynet_with("  usage_task:", "  usage_tusk:");
  ASSERT_EQ(load_text(y, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "templates.usage_tusk: unknown template");
  free(y);

  y = skynet_with("  cancelling: \"#{{id}} cancelling.\"\n", "");
  ASSERT_EQ(load_text(y, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "templates.cancelling: missing");
  free(y);

  y = skynet_with("tone:", "tones:");
  ASSERT_EQ(load_text(y, why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "tones: unknown key");
  free(y);

  ASSERT_EQ(load_text("name: [unclosed", why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "did not find expected");
  ASSERT_EQ(load_text("- a list", why, sizeof why), ERR_CONFIG);
  ASSERT_EQ(load_text("name: X\nsystem_prompt: Y\n", why, sizeof why), ERR_CONFIG);
  ASSERT_CONTAINS(why, "templates.help: missing");
}

TEST(every_template_is_in_both_shipped_personas)
{
  size_t n;
  const struct persona_template_def *d = persona_template_defs(&n);
  struct persona *p;
  char why[256];

  ASSERT(n >= 20);
  for (int k = 0; k < 2; k++) {
    ASSERT_EQ(persona_load(k ? "example" : "skynet", NULL, &p, why, sizeof why), ERR_OK);
    for (size_t i = 0; i < n; i++) {
      char *t = persona_render(p, d[i].key, NULL);
      ASSERT(t && *t && strcmp(t, d[i].key) != 0);
      free(t);
    }
    persona_free(p);
  }
}

int main(void)
{
  tu_tmpdir(g_dir, sizeof g_dir);
  RUN(shipped_personas_load_and_render);
  RUN(persona_from_home_and_from_a_path);
  RUN(broken_personas_name_the_key);
  RUN(every_template_is_in_both_shipped_personas);
  tu_rmrf(g_dir);
  return test_summary();
}
