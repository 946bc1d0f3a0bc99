/* providers/llm/gemini.c — Google Gemini generateContent.
 *
 * POST {base}/v1beta/models/{model}:generateContent with the key in the
 * x-goog-api-key header (never in the URL, where it would reach access logs). */
#include "llm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static json_object *text_parts(const char *text)
{
  json_object *parts = json_object_new_array(), *p = json_object_new_object();

  json_object_object_add(p, "text", json_object_new_string(text ? text : ""));
  json_object_array_add(parts, p);
  return parts;
}

static enum err gm_build(const struct llm *c, const struct llm_req *r, int json_level,
                         struct buf *url, struct buf *body)
{
  json_object *root = json_object_new_object(), *contents = json_object_new_array();
  json_object *gen = json_object_new_object(), *schema = NULL;
  enum err e = ERR_OK;

  if (r->system && *r->system) {
    json_object *si = json_object_new_object();
    json_object_object_add(si, "parts", text_parts(r->system));
    json_object_object_add(root, "systemInstruction", si);
  }
  for (size_t i = 0; i < r->n_msgs; i++) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string(
        strcmp(r->msgs[i].role, "assistant") == 0 ? "model" : "user"));
    json_object_object_add(m, "parts", text_parts(r->msgs[i].text));
    json_object_array_add(contents, m);
  }
  json_object_object_add(root, "contents", contents);
  if (r->schema_gemini && json_level > 0) {
    json_object_object_add(gen, "responseMimeType", json_object_new_string("application/json"));
    if (json_level > 1 && !(schema = json_tokener_parse(r->schema_gemini))) {
      e = ERR_INVAL;
      goto out;
    }
    if (schema)
      json_object_object_add(gen, "responseSchema", schema);
  }
  json_object_object_add(gen, "temperature", json_object_new_double(r->temperature));
  json_object_object_add(gen, "maxOutputTokens",
                         json_object_new_int(r->max_tokens > 0 ? r->max_tokens : 1024));
  json_object_object_add(root, "generationConfig", gen);
  gen = NULL;
  if ((e = buf_printf(url, "%s/v1beta/models/%s:generateContent", llm_base(c), llm_model(c))))
    goto out;
  e = buf_appends(body, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
out:
  json_object_put(gen);
  json_object_put(root);
  return e;
}

static enum err gm_auth(const struct llm *c, struct buf *hdr)
{
  return llm_key(c) ? buf_printf(hdr, "x-goog-api-key: %s", llm_key(c)) : ERR_OK;
}

static int64_t get_int(json_object *o, const char *k)
{
  json_object *v;
  return o && json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static enum err gm_parse(const char *body, struct llm_resp *out, char *why, size_t n)
{
  json_object *root = json_tokener_parse(body), *v, *cand, *content, *parts;
  struct buf text = BUF_INIT(4 * 1024 * 1024);
  enum err e = ERR_PARSE;

  if (!root || !json_object_is_type(root, json_type_object)) {
    snprintf(why, n, "the answer is not JSON");
    goto out;
  }
  if (json_object_object_get_ex(root, "usageMetadata", &v)) {
    out->prompt_tokens = get_int(v, "promptTokenCount");
    out->completion_tokens = get_int(v, "candidatesTokenCount");
  }
  if (json_object_object_get_ex(root, "promptFeedback", &v) &&
      json_object_object_get_ex(v, "blockReason", &v)) {
    out->refused = 1;
    snprintf(out->detail, sizeof out->detail, "prompt blocked: %s", json_object_get_string(v));
    snprintf(out->finish, sizeof out->finish, "BLOCKED");
    e = ERR_OK;
    goto out;
  }
  if (!json_object_object_get_ex(root, "candidates", &v) ||
      !json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
    snprintf(why, n, "the answer has no candidates");
    goto out;
  }
  cand = json_object_array_get_idx(v, 0);
  if (json_object_object_get_ex(cand, "finishReason", &v))
    snprintf(out->finish, sizeof out->finish, "%s", json_object_get_string(v));
  if (strcmp(out->finish, "MAX_TOKENS") == 0)
    out->truncated = 1;
  if (!strcmp(out->finish, "SAFETY") || !strcmp(out->finish, "RECITATION") ||
      !strcmp(out->finish, "PROHIBITED_CONTENT") || !strcmp(out->finish, "BLOCKLIST")) {
    out->refused = 1;
    snprintf(out->detail, sizeof out->detail, "the model stopped: %s", out->finish);
  }
  if (json_object_object_get_ex(cand, "content", &content) &&
      json_object_object_get_ex(content, "parts", &parts) &&
      json_object_is_type(parts, json_type_array)) {
    for (size_t i = 0; i < json_object_array_length(parts); i++) {
      json_object *p = json_object_array_get_idx(parts, i);
      if (json_object_object_get_ex(p, "thought", &v) && json_object_get_boolean(v))
        continue;   /* thinking models: not part of the answer */
      if (json_object_object_get_ex(p, "text", &v) &&
          buf_appends(&text, json_object_get_string(v))) {
        snprintf(why, n, "the answer is too long");
        goto out;
      }
    }
  }
  if (text.len)
    out->text = buf_detach(&text);
  else if (!out->refused && !out->truncated) {
    snprintf(why, n, "the answer has no text");
    goto out;
  }
  e = ERR_OK;
out:
  buf_release(&text);
  json_object_put(root);
  return e;
}

/* {"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED",
 *  "details": [{"@type": "...RetryInfo", "retryDelay": "30s"}]}} */
static void gm_parse_error(const char *body, char *msg, size_t n, int64_t *retry_ms)
{
  json_object *root = json_tokener_parse(body), *err, *v, *d;

  *retry_ms = 0;
  if (!root || !json_object_object_get_ex(root, "error", &err))
    goto out;
  if (json_object_object_get_ex(err, "status", &v))
    snprintf(msg, n, "%s", json_object_get_string(v));
  if (json_object_object_get_ex(err, "details", &d) && json_object_is_type(d, json_type_array))
    for (size_t i = 0; i < json_object_array_length(d); i++)
      if (json_object_object_get_ex(json_object_array_get_idx(d, i), "retryDelay", &v)) {
        double s = strtod(json_object_get_string(v), NULL);
        if (s > 0 && s < 86400)
          *retry_ms = (int64_t)(s * 1000);
      }
out:
  json_object_put(root);
}

static int gm_rejects_schema(const char *body)
{
  return strstr(body, "responseSchema") || strstr(body, "response_schema") ||
         strstr(body, "responseMimeType") || strstr(body, "response_mime_type");
}

const struct llm_backend llm_gemini = {
  .name = "gemini",
  .default_model = "gemini-2.5-flash",
  .build = gm_build,
  .auth_header = gm_auth,
  .parse = gm_parse,
  .parse_error = gm_parse_error,
  .rejects_schema = gm_rejects_schema,
};
