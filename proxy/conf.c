#include "proxy/conf.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int load_from_parser(sy_conf_t *c, yaml_parser_t *parser)
{
    if (!yaml_parser_load(parser, &c->doc)) {
        sy_conf_error(c, NULL, "%s at line %zu column %zu%s%s", parser->problem ? parser->problem : "YAML error",
                      parser->problem_mark.line + 1, parser->problem_mark.column + 1,
                      parser->context ? " " : "", parser->context ? parser->context : "");
        /* Replace the generic message by the positioned form expected everywhere. */
        free(c->errors[c->nerrors - 1]);
        char *msg = NULL;
        if (asprintf(&msg, "%s:%zu:%zu: %s%s%s", c->file, parser->problem_mark.line + 1,
                     parser->problem_mark.column + 1, parser->problem ? parser->problem : "YAML error",
                     parser->context ? " " : "", parser->context ? parser->context : "") < 0)
            msg = NULL;
        c->errors[c->nerrors - 1] = msg;
        return SY_EINVAL;
    }
    c->have_doc = true;
    if (yaml_document_get_root_node(&c->doc) == NULL)
        return sy_conf_error(c, NULL, "the file is empty");
    return 0;
}

int sy_conf_open(sy_conf_t *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->file = path;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return sy_conf_error(c, NULL, "cannot open: %s", strerror(errno));
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = load_from_parser(c, &parser);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int sy_conf_open_string(sy_conf_t *c, const char *name, const char *text, size_t len)
{
    memset(c, 0, sizeof(*c));
    c->file = name;
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = load_from_parser(c, &parser);
    yaml_parser_delete(&parser);
    return rc;
}

void sy_conf_close(sy_conf_t *c)
{
    if (c->have_doc)
        yaml_document_delete(&c->doc);
    c->have_doc = false;
    for (size_t i = 0; i < c->nerrors; i++)
        free(c->errors[i]);
    c->nerrors = 0;
}

yaml_node_t *sy_conf_root(sy_conf_t *c)
{
    return c->have_doc ? yaml_document_get_root_node(&c->doc) : NULL;
}

yaml_node_t *sy_conf_node(sy_conf_t *c, int index)
{
    return yaml_document_get_node(&c->doc, index);
}

int sy_conf_error(sy_conf_t *c, const yaml_node_t *node, const char *fmt, ...)
{
    if (c->nerrors >= SY_CONF_MAX_ERRORS) {
        c->nerrors_dropped++;
        return SY_EINVAL;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *line = NULL;
    int n;
    if (node != NULL)
        n = asprintf(&line, "%s:%zu:%zu: %s", c->file, node->start_mark.line + 1,
                     node->start_mark.column + 1, msg);
    else
        n = asprintf(&line, "%s: %s", c->file, msg);
    c->errors[c->nerrors++] = n < 0 ? NULL : line;
    return SY_EINVAL;
}

void sy_conf_print_errors(const sy_conf_t *c, void *out)
{
    for (size_t i = 0; i < c->nerrors; i++)
        fprintf(out, "%s\n", c->errors[i] ? c->errors[i] : "(out of memory formatting an error)");
    if (c->nerrors_dropped)
        fprintf(out, "%s: ... and %zu more errors\n", c->file, c->nerrors_dropped);
}

bool sy_conf_map_next(sy_conf_t *c, yaml_node_t *map, size_t *iter, yaml_node_t **key,
                      yaml_node_t **value)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return false;
    yaml_node_pair_t *pair = map->data.mapping.pairs.start + *iter;
    if (pair >= map->data.mapping.pairs.top)
        return false;
    (*iter)++;
    *key = sy_conf_node(c, pair->key);
    *value = sy_conf_node(c, pair->value);
    return true;
}

const char *sy_conf_scalar(const yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE)
        return NULL;
    return (const char *)node->data.scalar.value;
}

bool sy_conf_key_is(const yaml_node_t *key, const char *name)
{
    const char *s = sy_conf_scalar(key);
    return s != NULL && strcmp(s, name) == 0;
}

bool sy_conf_key_repeated(sy_conf_t *c, yaml_node_t *map, const yaml_node_t *key)
{
    const char *name = sy_conf_scalar(key);
    yaml_node_t *k, *v;
    for (size_t it = 0; name != NULL && sy_conf_map_next(c, map, &it, &k, &v) && k != key;)
        if (sy_conf_key_is(k, name))
            return true;
    return false;
}

yaml_node_t *sy_conf_map_get(sy_conf_t *c, yaml_node_t *map, const char *name)
{
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, map, &it, &k, &v);)
        if (sy_conf_key_is(k, name))
            return v;
    return NULL;
}

int sy_conf_route_subsections(sy_conf_t *c, yaml_node_t *routes, const char *key, size_t size,
                              void **items, size_t *n, sy_conf_route_fn each)
{
    *items = NULL;
    *n = 0;
    if (routes == NULL || routes->type != YAML_SEQUENCE_NODE)
        return 0;
    size_t count = (size_t)(routes->data.sequence.items.top - routes->data.sequence.items.start);
    char *arr = calloc(count + 1, size);
    if (arr == NULL)
        return sy_conf_error(c, routes, "out of memory");
    *items = arr;
    *n = count;
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *route = sy_conf_node(c, routes->data.sequence.items.start[i]);
        const char *name = sy_conf_scalar(sy_conf_map_get(c, route, "name"));
        if (each(c, route, name, sy_conf_map_get(c, route, key), arr + i * size) != 0)
            rc = SY_EINVAL;
    }
    return rc;
}

int sy_conf_expect(sy_conf_t *c, yaml_node_t *node, yaml_node_type_t type, const char *what)
{
    if (node != NULL && node->type == type)
        return 0;
    return sy_conf_error(c, node, "expected %s", what);
}

int sy_conf_int(sy_conf_t *c, yaml_node_t *node, int64_t min, int64_t max, int64_t *out)
{
    const char *s = sy_conf_scalar(node);
    if (s == NULL)
        return sy_conf_error(c, node, "expected a number");
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return sy_conf_error(c, node, "'%s' is not a whole number", s);
    if (v < min || v > max)
        return sy_conf_error(c, node, "%lld is out of range (%lld..%lld)", v, (long long)min,
                             (long long)max);
    *out = v;
    return 0;
}

static int parse_unit_number(const char *s, uint64_t *num, const char **unit)
{
    if (s == NULL || *s < '0' || *s > '9')
        return SY_EINVAL;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return SY_EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
        s++;
    }
    while (*s == ' ')
        s++;
    *num = v;
    *unit = s;
    return 0;
}

static int scale(uint64_t v, uint64_t mul, uint64_t *out)
{
    if (mul != 0 && v > UINT64_MAX / mul)
        return SY_EINVAL;
    *out = v * mul;
    return 0;
}

int sy_parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *unit;
    if (parse_unit_number(s, &v, &unit) != 0)
        return SY_EINVAL;
    static const struct { const char *u; uint64_t mul; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    if (*unit == '\0')
        return v == 0 ? (*out = 0, 0) : SY_EINVAL; /* a bare number is ambiguous */
    for (size_t i = 0; i < SY_ARRAY_LEN(units); i++)
        if (strcmp(unit, units[i].u) == 0)
            return scale(v, units[i].mul, out);
    return SY_EINVAL;
}

int sy_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *unit;
    if (parse_unit_number(s, &v, &unit) != 0)
        return SY_EINVAL;
    static const struct { const char *u; uint64_t mul; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024}, {"MiB", 1024 * 1024}, {"GiB", 1024ULL * 1024 * 1024},
    };
    for (size_t i = 0; i < SY_ARRAY_LEN(units); i++)
        if (strcmp(unit, units[i].u) == 0)
            return scale(v, units[i].mul, out);
    return SY_EINVAL;
}

int sy_conf_duration_ms(sy_conf_t *c, yaml_node_t *node, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *s = sy_conf_scalar(node);
    uint64_t v;
    if (s == NULL || sy_parse_duration_ms(s, &v) != 0)
        return sy_conf_error(c, node, "'%s' is not a duration (a number with ms, s, m or h, e.g. 10s)",
                             s ? s : "");
    if (v < min || v > max)
        return sy_conf_error(c, node, "duration %s is out of range (%llums..%llums)", s,
                             (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

int sy_conf_size(sy_conf_t *c, yaml_node_t *node, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *s = sy_conf_scalar(node);
    uint64_t v;
    if (s == NULL || sy_parse_size(s, &v) != 0)
        return sy_conf_error(c, node, "'%s' is not a size (bytes, or a number with KiB, MiB or GiB)",
                             s ? s : "");
    if (v < min || v > max)
        return sy_conf_error(c, node, "size %s is out of range (%llu..%llu bytes)", s,
                             (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

int sy_conf_bool(sy_conf_t *c, yaml_node_t *node, bool *out)
{
    const char *s = sy_conf_scalar(node);
    if (s != NULL && (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0)) {
        *out = true;
        return 0;
    }
    if (s != NULL && (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0)) {
        *out = false;
        return 0;
    }
    return sy_conf_error(c, node, "expected true or false");
}

int sy_conf_string(sy_conf_t *c, yaml_node_t *node, char **out)
{
    const char *s = sy_conf_scalar(node);
    if (s == NULL)
        return sy_conf_error(c, node, "expected a string");
    char *copy = strdup(s);
    if (copy == NULL)
        return sy_conf_error(c, node, "out of memory");
    free(*out);
    *out = copy;
    return 0;
}

void sy_conf_defaults(const sy_conf_field_t *fields, size_t n, void *out)
{
    for (size_t i = 0; i < n; i++) {
        const sy_conf_field_t *f = &fields[i];
        char *p = (char *)out + f->offset;
        uint64_t u = 0;
        switch (f->type) {
        case SY_CT_INT:
            *(int64_t *)p = f->def ? strtoll(f->def, NULL, 10) : 0;
            break;
        case SY_CT_DURATION:
            if (f->def) {
                int rc = sy_parse_duration_ms(f->def, &u);
                assert(rc == 0);
                (void)rc;
            }
            *(uint64_t *)p = u;
            break;
        case SY_CT_SIZE:
            if (f->def) {
                int rc = sy_parse_size(f->def, &u);
                assert(rc == 0);
                (void)rc;
            }
            *(uint64_t *)p = u;
            break;
        case SY_CT_BOOL:
            *(bool *)p = f->def && strcmp(f->def, "true") == 0;
            break;
        case SY_CT_STRING:
            *(char **)p = f->def ? strdup(f->def) : NULL;
            break;
        }
    }
}

int sy_conf_fields(sy_conf_t *c, yaml_node_t *map, const sy_conf_field_t *fields, size_t n,
                   void *out, sy_conf_unknown_fn unknown)
{
    if (sy_conf_expect(c, map, YAML_MAPPING_NODE, "a mapping of keys") != 0)
        return SY_EINVAL;
    int rc = 0;
    uint64_t seen = 0; /* tables are small; a bit per field catches repeated keys */
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, map, &it, &k, &v);) {
        const char *name = sy_conf_scalar(k);
        const sy_conf_field_t *f = NULL;
        size_t idx = 0;
        for (size_t i = 0; name && i < n; i++)
            if (strcmp(fields[i].key, name) == 0) {
                f = &fields[i];
                idx = i;
            }
        if (f == NULL) {
            if (unknown != NULL) {
                if (unknown(c, k, v, out) != 0)
                    rc = SY_EINVAL;
                continue;
            }
            rc = sy_conf_error(c, k, "unknown key '%s'", name ? name : "?");
            continue;
        }
        if (idx < 64 && (seen & (1ULL << idx))) {
            rc = sy_conf_error(c, k, "key '%s' is repeated", name);
            continue;
        }
        if (idx < 64)
            seen |= 1ULL << idx;
        char *p = (char *)out + f->offset;
        int r = 0;
        switch (f->type) {
        case SY_CT_INT:
            r = sy_conf_int(c, v, f->min, f->max, (int64_t *)p);
            break;
        case SY_CT_DURATION:
            r = sy_conf_duration_ms(c, v, (uint64_t)f->min, (uint64_t)f->max, (uint64_t *)p);
            break;
        case SY_CT_SIZE:
            r = sy_conf_size(c, v, (uint64_t)f->min, (uint64_t)f->max, (uint64_t *)p);
            break;
        case SY_CT_BOOL:
            r = sy_conf_bool(c, v, (bool *)p);
            break;
        case SY_CT_STRING:
            r = sy_conf_string(c, v, (char **)p);
            break;
        }
        if (r != 0)
            rc = r;
    }
    return rc;
}
