/* The comparison of two answers to the same request (shadow traffic): status,
 * chosen headers, and the body, exactly or as JSON with ignored paths. Pure:
 * no I/O, no state; any thread.
 *
 * A difference is named by a path: "status", "header:<name>", "body" (bytes
 * differ, not both JSON), or a JSON path ("$.a.b", "$.items[3].id"). Ignore
 * patterns are JSON paths where "[*]" stands for any index; a pattern ignores
 * its subtree. Noise subtraction (Diffy) removes from a legacy-vs-new diff the
 * paths a legacy-vs-legacy diff of the same request also has. */
#ifndef SY_DIFF_H
#define SY_DIFF_H

#include "proxy/hooks.h"

#include <stdbool.h>
#include <stddef.h>

#define SY_DIFF_MAX_PATHS 32
#define SY_DIFF_PATH_MAX 128

enum {
    SY_DIFF_STATUS = 1 << 0,
    SY_DIFF_HEADER = 1 << 1,
    SY_DIFF_BODY = 1 << 2, /* bytes, not JSON */
    SY_DIFF_JSON = 1 << 3, /* a JSON field */
};
#define SY_DIFF_KINDS 4

typedef struct sy_diff_opts {
    char *const *headers;  /* compared, lower case */
    size_t nheaders;
    char *const *ignore;   /* JSON path patterns */
    size_t nignore;
} sy_diff_opts_t;

typedef struct sy_diff {
    unsigned kinds;                                   /* SY_DIFF_* present */
    size_t npaths;                                    /* kept in paths */
    size_t dropped;                                   /* found past SY_DIFF_MAX_PATHS */
    char paths[SY_DIFF_MAX_PATHS][SY_DIFF_PATH_MAX];  /* cut to fit */
} sy_diff_t;

/* Compares a and b into out (cleared first). */
void sy_diff_compare(const sy_diff_opts_t *o, const sy_shadow_side_t *a, const sy_shadow_side_t *b, sy_diff_t *out);
/* Removes from d every path noise has too, and recomputes d->kinds; the
 * paths past the kept ones (d->dropped) stay counted. Returns how many went. */
size_t sy_diff_subtract(sy_diff_t *d, const sy_diff_t *noise);
/* Whether JSON path `path` is `pattern` or inside it ("[*]": any index). */
bool sy_diff_path_matches(const char *pattern, const char *path);
/* The kind of a path (one SY_DIFF_* bit). */
unsigned sy_diff_kind_of(const char *path);
/* "status", "header", "body", "json" for bit i of SY_DIFF_KINDS. */
const char *sy_diff_kind_name(unsigned i);

#endif
