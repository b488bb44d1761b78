/* The admin API's JSON bodies. See admin_body.h. */
#include "handlers/admin_body.h"

#include <stdio.h>
#include <stdlib.h>

int sy_admin_body_parse(const char *buf, size_t len, json_t **out, char *why, size_t cap)
{
    *out = NULL;
    if (len == 0)
        return 0;
    json_error_t jerr;
    json_t *body = json_loadb(buf, len, 0, &jerr);
    if (body == NULL || !json_is_object(body)) {
        snprintf(why, cap, "the body is not a JSON object: %s (line %d, column %d)",
                 body ? "not an object" : jerr.text, jerr.line, jerr.column);
        json_decref(body);
        return -1;
    }
    *out = body;
    return 0;
}

int sy_admin_body_percent(const json_t *body, int32_t *bp, const char **why)
{
    json_t *v = body ? json_object_get(body, "percent_bp") : NULL;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 10000) {
        *why = "send {\"percent_bp\": N} with N a whole number 0..10000 (2500 is 25 %)";
        return -1;
    }
    *bp = (int32_t)json_integer_value(v);
    return 0;
}

static int string_list(const json_t *v, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (v == NULL)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > 1000)
        return -1;
    *out = calloc(json_array_size(v) + 1, sizeof(char *));
    if (*out == NULL)
        return -1;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            free(*out);
            *out = NULL;
            *n = 0;
            return -1;
        }
        (*out)[(*n)++] = json_string_value(e);
    }
    return 0;
}

int sy_admin_body_test_users(const json_t *body, const char ***add, size_t *nadd, const char ***rem, size_t *nrem,
                             const char **why)
{
    *add = *rem = NULL;
    *nadd = *nrem = 0;
    if (body == NULL || string_list(json_object_get(body, "add"), add, nadd) != 0 ||
        string_list(json_object_get(body, "remove"), rem, nrem) != 0 || *nadd + *nrem == 0) {
        free(*add);
        free(*rem);
        *add = *rem = NULL;
        *nadd = *nrem = 0;
        *why = "send {\"add\": [\"key\", ...], \"remove\": [\"key\", ...]} with strings";
        return -1;
    }
    return 0;
}

int sy_admin_body_reason(const json_t *body, const char **out, const char **why)
{
    json_t *r = body ? json_object_get(body, "reason") : NULL;
    *out = "";
    if (r == NULL)
        return 0;
    if (!json_is_string(r) || json_string_length(r) > 255) {
        *why = "\"reason\" must be a string of at most 255 characters";
        return -1;
    }
    *out = json_string_value(r);
    return 0;
}
