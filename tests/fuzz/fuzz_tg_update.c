/* libFuzzer target for the Telegram update parser (bot/telegram.c): any
 * bytes as one getUpdates answer; every element goes through
 * tg_update_parse(), and texts through the HTML escaper and the splitter. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "bot/telegram.h"

static void fuzz_one(json_object *o)
{
  struct tg_update u;
  const char *s;
  char *esc;

  if (tg_update_parse(o, &u) != ERR_OK)
    return;
  s = u.text ? u.text : u.data;
  if (!s)
    return;
  esc = tg_html_escape(s, strlen(s));
  free(esc);
  for (size_t off = 0, n = strlen(s); off < n;)
    off += tg_split_len(s + off, n - off, 64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_tokener *tok = json_tokener_new();
  json_object *root, *res;

  if (!tok)
    return 0;
  root = json_tokener_parse_ex(tok, (const char *)data, (int)(size > 1 << 20 ? 1 << 20 : size));
  if (root && json_object_object_get_ex(root, "result", &res) &&
      json_object_is_type(res, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(res); i++)
      fuzz_one(json_object_array_get_idx(res, i));
  } else if (root) {
    fuzz_one(root);
  }
  if (root)
    json_object_put(root);
  json_tokener_free(tok);
  return 0;
}
