/* libFuzzer target: the plan parser and the policy engine over whatever a
 * model (or an attacker behind it) could return. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine/plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct plan p;
  char err[256];

  if (plan_parse((const char *)data, size, &p, err, sizeof err) == ERR_OK) {
    char *json, *text;
    plan_assess(&p);
    json = plan_to_json(&p);
    text = plan_describe(&p);
    free(json);
    free(text);
    plan_release(&p);
  }
  return 0;
}
