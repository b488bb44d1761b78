/* Two answers compared: status, chosen headers, body (JSON-aware). */
#include "healthcheck/diff.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *sy_diff_kind_name(unsigned i)
{
    static const char *const names[SY_DIFF_KINDS] = {"status", "header", "body", "json"};
    return i < SY_DIFF_KINDS ? names[i] : "?";
}

unsigned sy_diff_kind_of(const char *path)
{
    if (path[0] == '$')
        return SY_DIFF_JSON;
    if (strncmp(path, "header:", 7) == 0)
        return SY_DIFF_HEADER;
    if (strcmp(path, "status") == 0)
        return SY_DIFF_STATUS;
    return SY_DIFF_BODY;
}

static void add(sy_diff_t *d, const char *path)
{
    d->kinds |= sy_diff_kind_of(path);
    if (d->npaths == SY_DIFF_MAX_PATHS) {
        d->dropped++;
        return;
    }
    snprintf(d->paths[d->npaths++], SY_DIFF_PATH_MAX, "%s", path);
}

bool sy_diff_path_matches(const char *pat, const char *path)
{
    while (*pat != '\0') {
        if (pat[0] == '[' && pat[1] == '*' && pat[2] == ']') {
            if (*path != '[')
                return false;
            const char *q = path + 1;
            while (*q >= '0' && *q <= '9')
                q++;
            if (q == path + 1 || *q != ']')
                return false;
            pat += 3;
            path = q + 1;
            continue;
        }
        if (*pat != *path)
            return false;
        pat++;
        path++;
    }
    /* The pattern is the path, or a parent of it. */
    return *path == '\0' || *path == '.' || *path == '[';
}

static bool ignored(const sy_diff_opts_t *o, const char *path)
{
    for (size_t i = 0; i < o->nignore; i++)
        if (sy_diff_path_matches(o->ignore[i], path))
            return true;
    return false;
}

static void walk(const sy_diff_opts_t *o, const json_t *a, const json_t *b, char *path, size_t len, sy_diff_t *d)
{
    if (ignored(o, path))
        return;
    if (a == NULL || b == NULL || json_typeof(a) != json_typeof(b)) {
        /* true and false are two types to jansson: one difference all the same */
        add(d, path);
        return;
    }
    size_t cap = 1024;
    if (json_is_object(a)) {
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va)
        {
            snprintf(path + len, cap - len, ".%s", k);
            walk(o, va, json_object_get(b, k), path, strlen(path), d);
        }
        json_t *vb;
        json_object_foreach((json_t *)b, k, vb)
        {
            if (json_object_get(a, k) != NULL)
                continue;
            snprintf(path + len, cap - len, ".%s", k);
            if (!ignored(o, path))
                add(d, path);
        }
        path[len] = '\0';
        return;
    }
    if (json_is_array(a)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        size_t n = na > nb ? na : nb;
        for (size_t i = 0; i < n; i++) {
            snprintf(path + len, cap - len, "[%zu]", i);
            walk(o, json_array_get(a, i), json_array_get(b, i), path, strlen(path), d);
        }
        path[len] = '\0';
        return;
    }
    if (!json_equal((json_t *)a, (json_t *)b))
        add(d, path);
}

static const sy_header_t *find(const sy_shadow_side_t *s, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < s->nheaders; i++)
        if (s->headers[i].name_len == n && strncasecmp(s->headers[i].name, name, n) == 0)
            return &s->headers[i];
    return NULL;
}

static bool looks_json(const sy_shadow_side_t *s)
{
    const sy_header_t *ct = find(s, "content-type");
    if (ct == NULL)
        return false;
    for (size_t i = 0; i + 4 <= ct->value_len; i++)
        if (strncasecmp(ct->value + i, "json", 4) == 0)
            return true;
    return false;
}

void sy_diff_compare(const sy_diff_opts_t *o, const sy_shadow_side_t *a, const sy_shadow_side_t *b, sy_diff_t *out)
{
    memset(out, 0, sizeof(*out));
    if (a->status != b->status)
        add(out, "status");
    for (size_t i = 0; i < o->nheaders; i++) {
        const sy_header_t *ha = find(a, o->headers[i]), *hb = find(b, o->headers[i]);
        if ((ha == NULL) != (hb == NULL) ||
            (ha != NULL && (ha->value_len != hb->value_len || memcmp(ha->value, hb->value, ha->value_len) != 0))) {
            char p[SY_DIFF_PATH_MAX];
            snprintf(p, sizeof(p), "header:%s", o->headers[i]);
            add(out, p);
        }
    }
    bool same_bytes = a->body_len == b->body_len && (a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0);
    if (same_bytes)
        return;
    if (looks_json(a) || looks_json(b) || o->nignore > 0) {
        json_t *ja = a->body_len ? json_loadb(a->body, a->body_len, JSON_DECODE_ANY, NULL) : NULL;
        json_t *jb = ja && b->body_len ? json_loadb(b->body, b->body_len, JSON_DECODE_ANY, NULL) : NULL;
        if (ja != NULL && jb != NULL) {
            char path[1024] = "$";
            walk(o, ja, jb, path, 1, out);
            json_decref(ja);
            json_decref(jb);
            return;
        }
        json_decref(ja);
        json_decref(jb);
    }
    add(out, "body");
}

size_t sy_diff_subtract(sy_diff_t *d, const sy_diff_t *noise)
{
    size_t kept = 0, gone = 0;
    d->kinds = 0;
    for (size_t i = 0; i < d->npaths; i++) {
        bool is_noise = false;
        for (size_t j = 0; j < noise->npaths && !is_noise; j++)
            is_noise = strcmp(d->paths[i], noise->paths[j]) == 0;
        if (is_noise) {
            gone++;
            continue;
        }
        if (kept != i)
            memcpy(d->paths[kept], d->paths[i], SY_DIFF_PATH_MAX);
        d->kinds |= sy_diff_kind_of(d->paths[kept]);
        kept++;
    }
    d->npaths = kept;
    if (d->dropped > 0)
        d->kinds |= SY_DIFF_JSON; /* unknown paths past the kept ones: counted as real */
    return gone;
}
