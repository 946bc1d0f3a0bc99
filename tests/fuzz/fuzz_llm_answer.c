/* fuzz_llm_answer — a model server's answer, end to end through our side:
 * the Gemini and OpenAI response parsers, the JSON extraction from the
 * model's text, and the plan parser.  Never a crash, never a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan.h"
#include "engine/planner.h"
#include "providers/llm/llm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *s = malloc(size + 1), why[256], msg[200];
  const struct llm_backend *be[] = {&llm_gemini, &llm_openai};
  int64_t retry;

  if (!s)
    return 0;
  memcpy(s, data, size);
  s[size] = 0;
  for (int i = 0; i < 2; i++) {
    struct llm_resp r;
    memset(&r, 0, sizeof r);
    if (be[i]->parse(s, &r, why, sizeof why) == ERR_OK && r.text) {
      char *j = planner_json_extract(r.text);
      struct plan p;
      if (j && plan_parse(j, strlen(j), &p, why, sizeof why) == ERR_OK) {
        plan_assess(&p);
        plan_release(&p);
      }
      free(j);
    }
    llm_resp_release(&r);
    be[i]->parse_error(s, msg, sizeof msg, &retry);
  }
  free(s);
  return 0;
}
