/* YAML config reading helpers: walking a libyaml document, typed values with
 * units, declarative field tables, and errors as `file:line:col: message`.
 *
 * A sy_conf_t is a parse context. It owns the YAML document and the list of
 * errors found so far; parsing goes on after an error so that one run of
 * `switchyard check` reports every problem. Nothing here keeps pointers into the
 * document after sy_conf_close(): strings are copied. Not thread-safe; used at
 * start and on reload, never on a worker's loop. */
#ifndef SY_CONF_H
#define SY_CONF_H

#include "proxy/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#define SY_CONF_MAX_ERRORS 32

typedef struct sy_conf {
    const char *file;          /* for messages; not owned */
    yaml_document_t doc;
    bool have_doc;
    char *errors[SY_CONF_MAX_ERRORS];
    size_t nerrors;
    size_t nerrors_dropped;
} sy_conf_t;

/* Reads and parses `path` into c. Syntax errors are recorded in c (with line and
 * column) and SY_EINVAL returned; an unreadable file too. */
int sy_conf_open(sy_conf_t *c, const char *path) SY_MUST_USE;
/* Same, from a string (unit tests, fuzzers). `name` is used in messages. */
int sy_conf_open_string(sy_conf_t *c, const char *name, const char *text, size_t len) SY_MUST_USE;
void sy_conf_close(sy_conf_t *c);

yaml_node_t *sy_conf_root(sy_conf_t *c);
yaml_node_t *sy_conf_node(sy_conf_t *c, int index);

/* Records an error at node (NULL: no position). Always returns SY_EINVAL. */
int sy_conf_error(sy_conf_t *c, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes every error, one per line, to `out` (a FILE *). */
void sy_conf_print_errors(const sy_conf_t *c, void *out);

/* Iterates a mapping: for (size_t i = 0; sy_conf_map_next(c, map, &i, &k, &v);) */
bool sy_conf_map_next(sy_conf_t *c, yaml_node_t *map, size_t *iter, yaml_node_t **key,
                      yaml_node_t **value);
/* Scalar text (NUL-terminated by libyaml) or NULL if node is not a scalar. */
const char *sy_conf_scalar(const yaml_node_t *node);
bool sy_conf_key_is(const yaml_node_t *key, const char *name);
/* True when a key before `key` (one of map's keys) in `map` has the same name. */
bool sy_conf_key_repeated(sy_conf_t *c, yaml_node_t *map, const yaml_node_t *key);
/* The value of the first key named `name` in `map`, or NULL. */
yaml_node_t *sy_conf_map_get(sy_conf_t *c, yaml_node_t *map, const char *name);

/* For a section that lives under each route (`routes: [{name: a, plan: {...}}]`,
 * registered on the "routes" key beside routing's own): walks the routes list
 * and calls `each` once for every item, in order. `route` is the item (a
 * mapping, or anything else: routing reports that), `name` its `name` scalar
 * (NULL: none), `sub` the value of its first key named `key` (NULL: none) and
 * `slot` the item's element of a zeroed array of `size`-byte elements, one per
 * route (plus one). The array is malloc'd and stored in *items before the first
 * call, *n counts the routes; the caller owns the array, on error too. When
 * `routes` is not a sequence nothing is read and 0 returned (routing reports it).
 * Returns 0, or SY_EINVAL when an `each` did or memory ran out (recorded in c). */
typedef int (*sy_conf_route_fn)(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *sub,
                                void *slot);
int sy_conf_route_subsections(sy_conf_t *c, yaml_node_t *routes, const char *key, size_t size,
                              void **items, size_t *n, sy_conf_route_fn each) SY_MUST_USE;

/* Typed scalar readers. Each records an error at node and returns SY_EINVAL on a
 * bad value; bounds are inclusive. */
int sy_conf_int(sy_conf_t *c, yaml_node_t *node, int64_t min, int64_t max, int64_t *out);
int sy_conf_duration_ms(sy_conf_t *c, yaml_node_t *node, uint64_t min, uint64_t max, uint64_t *out);
int sy_conf_size(sy_conf_t *c, yaml_node_t *node, uint64_t min, uint64_t max, uint64_t *out);
int sy_conf_bool(sy_conf_t *c, yaml_node_t *node, bool *out);
/* Copies a scalar string (malloc'd, caller owns). */
int sy_conf_string(sy_conf_t *c, yaml_node_t *node, char **out);
int sy_conf_expect(sy_conf_t *c, yaml_node_t *node, yaml_node_type_t type, const char *what);

/* Pure parsers behind the readers (unit-tested directly). Return 0 or SY_EINVAL. */
int sy_parse_duration_ms(const char *s, uint64_t *out);
int sy_parse_size(const char *s, uint64_t *out);

/* Declarative fields: a mapping is parsed into a struct through a table. */
typedef enum sy_conf_type {
    SY_CT_INT,      /* int64_t */
    SY_CT_DURATION, /* uint64_t, milliseconds */
    SY_CT_SIZE,     /* uint64_t, bytes */
    SY_CT_BOOL,     /* bool */
    SY_CT_STRING,   /* char *, malloc'd */
} sy_conf_type_t;

typedef struct sy_conf_field {
    const char *key;
    sy_conf_type_t type;
    size_t offset;
    const char *def;  /* default, in config syntax; NULL: zero / NULL */
    int64_t min, max; /* inclusive bounds for numbers */
} sy_conf_field_t;

/* Writes every default of `fields` into out. Defaults are trusted (asserted). */
void sy_conf_defaults(const sy_conf_field_t *fields, size_t n, void *out);
/* Parses `map` (must be a mapping) into out. Unknown keys are errors, unless
 * `unknown` is set: then it is called for them and decides. */
typedef int (*sy_conf_unknown_fn)(sy_conf_t *c, yaml_node_t *key, yaml_node_t *value, void *out);
int sy_conf_fields(sy_conf_t *c, yaml_node_t *map, const sy_conf_field_t *fields, size_t n,
                   void *out, sy_conf_unknown_fn unknown);

#endif
