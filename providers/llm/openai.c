/* providers/llm/openai.c — OpenAI-compatible chat completions.
 *
 * POST {base}/chat/completions (the base includes /v1), Authorization: Bearer
 * when a key is set: OpenAI, Ollama, llama.cpp server, vLLM and most proxies.
 * Servers differ in what response_format they accept; llm.c steps down from
 * a JSON schema to JSON mode to none when one says it cannot. */
#include "llm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static enum err oa_build(const struct llm *c, const struct llm_req *r, int json_level,
                         struct buf *url, struct buf *body)
{
  json_object *root = json_object_new_object(), *msgs = json_object_new_array();
  enum err e = ERR_OK;

  json_object_object_add(root, "model", json_object_new_string(llm_model(c)));
  if (r->system && *r->system) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string("system"));
    json_object_object_add(m, "content", json_object_new_string(r->system));
    json_object_array_add(msgs, m);
  }
  for (size_t i = 0; i < r->n_msgs; i++) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string(
        strcmp(r->msgs[i].role, "assistant") == 0 ? "assistant" : "user"));
    json_object_object_add(m, "content", json_object_new_string(r->msgs[i].text));
    json_object_array_add(msgs, m);
  }
  json_object_object_add(root, "messages", msgs);
  if (r->schema_json && json_level > 0) {
    json_object *rf = json_object_new_object();
    if (json_level > 1) {
      json_object *js = json_object_new_object(), *schema = json_tokener_parse(r->schema_json);
      if (!schema) {
        json_object_put(js);
        json_object_put(rf);
        e = ERR_INVAL;
        goto out;
      }
      json_object_object_add(rf, "type", json_object_new_string("json_schema"));
      json_object_object_add(js, "name", json_object_new_string(
          r->schema_name ? r->schema_name : "answer"));
      json_object_object_add(js, "schema", schema);
      json_object_object_add(js, "strict", json_object_new_boolean(0));
      json_object_object_add(rf, "json_schema", js);
    } else {
      json_object_object_add(rf, "type", json_object_new_string("json_object"));
    }
    json_object_object_add(root, "response_format", rf);
  }
  json_object_object_add(root, "temperature", json_object_new_double(r->temperature));
  json_object_object_add(root, "max_tokens",
                         json_object_new_int(r->max_tokens > 0 ? r->max_tokens : 1024));
  if ((e = buf_printf(url, "%s/chat/completions", llm_base(c))))
    goto out;
  e = buf_appends(body, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
out:
  json_object_put(root);
  return e;
}

static enum err oa_auth(const struct llm *c, struct buf *hdr)
{
  return llm_key(c) && *llm_key(c) ? buf_printf(hdr, "Authorization: Bearer %s", llm_key(c))
                                   : ERR_OK;
}

static int64_t get_int(json_object *o, const char *k)
{
  json_object *v;
  return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static enum err oa_parse(const char *body, struct llm_resp *out, char *why, size_t n)
{
  json_object *root = json_tokener_parse(body), *v, *choice, *msg;
  enum err e = ERR_PARSE;

  if (!root || !json_object_is_type(root, json_type_object)) {
    snprintf(why, n, "the answer is not JSON");
    goto out;
  }
  if (json_object_object_get_ex(root, "usage", &v)) {
    out->prompt_tokens = get_int(v, "prompt_tokens");
    out->completion_tokens = get_int(v, "completion_tokens");
  }
  if (!json_object_object_get_ex(root, "choices", &v) ||
      !json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
    snprintf(why, n, "the answer has no choices");
    goto out;
  }
  choice = json_object_array_get_idx(v, 0);
  if (json_object_object_get_ex(choice, "finish_reason", &v) &&
      json_object_is_type(v, json_type_string))
    snprintf(out->finish, sizeof out->finish, "%s", json_object_get_string(v));
  if (strcmp(out->finish, "length") == 0)
    out->truncated = 1;
  if (!json_object_object_get_ex(choice, "message", &msg) ||
      !json_object_is_type(msg, json_type_object)) {
    snprintf(why, n, "the answer has no message");
    goto out;
  }
  if (json_object_object_get_ex(msg, "refusal", &v) && json_object_is_type(v, json_type_string)) {
    out->refused = 1;
    snprintf(out->detail, sizeof out->detail, "%s", json_object_get_string(v));
  }
  if (strcmp(out->finish, "content_filter") == 0 && !out->refused) {
    out->refused = 1;
    snprintf(out->detail, sizeof out->detail, "the model's content filter stopped it");
  }
  if (json_object_object_get_ex(msg, "content", &v) && json_object_is_type(v, json_type_string)) {
    if (!(out->text = strdup(json_object_get_string(v)))) {
      e = ERR_NOMEM;
      goto out;
    }
  } else if (!out->refused && !out->truncated) {
    snprintf(why, n, "the answer has no content");
    goto out;
  }
  e = ERR_OK;
out:
  json_object_put(root);
  return e;
}

static void oa_parse_error(const char *body, char *msg, size_t n, int64_t *retry_ms)
{
  json_object *root = json_tokener_parse(body), *err, *v;

  *retry_ms = 0;
  if (root && json_object_object_get_ex(root, "error", &err)) {
    if (json_object_is_type(err, json_type_string))
      snprintf(msg, n, "%.120s", json_object_get_string(err));
    else if (json_object_object_get_ex(err, "message", &v))
      snprintf(msg, n, "%.120s", json_object_get_string(v));
  }
  json_object_put(root);
}

static int oa_rejects_schema(const char *body)
{
  return strstr(body, "response_format") || strstr(body, "json_schema") ||
         strstr(body, "json_object");
}

const struct llm_backend llm_openai = {
  .name = "openai",
  .default_model = "gpt-4o-mini",
  .build = oa_build,
  .auth_header = oa_auth,
  .parse = oa_parse,
  .parse_error = oa_parse_error,
  .rejects_schema = oa_rejects_schema,
};
