/* Refused edits still in Redis. See refused.h. */
#include "flags/refused.h"

#include "flags/flags.h"

#include <stdlib.h>
#include <string.h>

static void entry_free(sy_refusal_t *r)
{
    free(r->field);
    free(r->value);
    free(r->why);
    free(r->in_force);
}

void sy_refused_clear(sy_refused_t *l)
{
    for (size_t k = 0; k < l->_n; k++)
        entry_free(&l->_v[k]);
    free(l->_v);
    l->_v = NULL;
    l->_n = 0;
}

void sy_refused_begin(sy_refused_t *l)
{
    for (size_t k = 0; k < l->_n; k++)
        l->_v[k].seen = false;
}

void sy_refused_end(sy_refused_t *l)
{
    size_t o = 0;
    for (size_t k = 0; k < l->_n; k++) {
        if (l->_v[k].seen)
            l->_v[o++] = l->_v[k];
        else
            entry_free(&l->_v[k]);
    }
    l->_n = o;
}

bool sy_refused_seen(sy_refused_t *l, const char *field, const char *value)
{
    for (size_t k = 0; k < l->_n; k++)
        if (strcmp(l->_v[k].field, field) == 0 && strncmp(l->_v[k].value, value, 256) == 0) {
            l->_v[k].seen = true;
            return true;
        }
    return false;
}

void sy_refused_add(sy_refused_t *l, const char *field, const char *value, const char *why, const char *in_force,
                    size_t cap)
{
    if (l->_n >= cap)
        return;
    sy_refusal_t *nv = realloc(l->_v, (l->_n + 1) * sizeof(*nv));
    if (nv == NULL)
        return;
    l->_v = nv;
    sy_refusal_t *r = &l->_v[l->_n];
    memset(r, 0, sizeof(*r));
    r->field = strdup(field);
    r->value = strndup(value, 256);
    r->why = strdup(why);
    r->in_force = strdup(in_force);
    if (r->field == NULL || r->value == NULL || r->why == NULL || r->in_force == NULL) {
        entry_free(r);
        return;
    }
    sy_flags_now(r->since);
    r->seen = true;
    l->_n++;
}

json_t *sy_refused_json(const sy_refused_t *l)
{
    json_t *out = json_array();
    for (size_t k = 0; out != NULL && k < l->_n; k++)
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s}", "field", l->_v[k].field, "value",
                                             l->_v[k].value, "why", l->_v[k].why, "since", l->_v[k].since,
                                             "in_force", l->_v[k].in_force));
    return out;
}
