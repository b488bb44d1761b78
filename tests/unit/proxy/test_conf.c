/* Config loading: units, defaults, errors with line and column, sections of
 * other modules, refused future sections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/config.h"
#include "proxy/h1.h"
#include "routing/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sy_conf_section_t *const sections[] = {&sy_routes_section};

static sy_config_t *load(const char *text, sy_conf_t *errs)
{
    return sy_config_load_string(errs, "t.yaml", text, sections, 1);
}

static bool has_error(const sy_conf_t *c, const char *needle)
{
    for (size_t i = 0; i < c->nerrors; i++)
        if (c->errors[i] && strstr(c->errors[i], needle))
            return true;
    return false;
}

#define MIN "listen: [{address: 127.0.0.1:8080}]\npools: {a: {endpoints: [127.0.0.1:1]}}\nroutes: [{name: r, legacy: a}]\n"

static void test_units(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(sy_parse_duration_ms("10s", &v), 0);
    assert_int_equal(v, 10000);
    assert_int_equal(sy_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(sy_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(sy_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(sy_parse_duration_ms("0", &v), 0);
    assert_int_equal(sy_parse_duration_ms("10", &v), SY_EINVAL);
    assert_int_equal(sy_parse_duration_ms("10 parsecs", &v), SY_EINVAL);
    assert_int_equal(sy_parse_duration_ms("-1s", &v), SY_EINVAL);
    assert_int_equal(sy_parse_duration_ms("99999999999999999999s", &v), SY_EINVAL);
    assert_int_equal(sy_parse_size("16KiB", &v), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(sy_parse_size("64MiB", &v), 0);
    assert_int_equal(v, 64 << 20);
    assert_int_equal(sy_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(sy_parse_size("1KB", &v), SY_EINVAL);
}

static void test_minimal_and_defaults(void **state)
{
    (void)state;
    sy_conf_t errs;
    sy_config_t *cfg = load(MIN, &errs);
    assert_non_null(cfg);
    assert_int_equal(errs.nerrors, 0);
    assert_int_equal(cfg->timeouts.client_header, 10000);
    assert_int_equal(cfg->timeouts.tunnel_idle, 600000);
    assert_int_equal(cfg->limits.header_bytes, 16384);
    assert_int_equal(cfg->limits.body_bytes, 64 << 20);
    assert_true(cfg->workers >= 1);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    assert_non_null(rs);
    assert_int_equal(rs->n, 1);
    assert_string_equal(rs->routes[0].salt, "r"); /* default salt is the name */
    assert_string_equal(rs->routes[0].host, "*");
    assert_string_equal(rs->routes[0].path_prefix, "/");
    sy_config_release(cfg);
    sy_conf_close(&errs);

    /* A buffer block is also a head reader's arena: the largest head and the most
     * headers the limits allow fit in one. */
    cfg = load(MIN "limits: {header_bytes: 64KiB, headers: 1000}\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(errs.nerrors, 0);
    assert_true(cfg->buffer_size >= sy_h1_arena_size(65536, 1000));
    sy_config_release(cfg);
    sy_conf_close(&errs);
}

static void test_positions(void **state)
{
    (void)state;
    sy_conf_t errs;
    sy_config_t *cfg = load("workers: 300\n"
                            "listen: [{address: 127.0.0.1:8080}]\n"
                            "timeouts: {connect: 2 parsecs}\n"
                            "pools: {a: {endpoints: [127.0.0.1:1]}}\n"
                            "routes:\n"
                            "  - {name: r, legacy: a, new: b}\n",
                            &errs);
    assert_null(cfg);
    assert_true(has_error(&errs, "t.yaml:1:10: 300 is out of range"));
    assert_true(has_error(&errs, "t.yaml:3:21:"));
    assert_true(has_error(&errs, "t.yaml:6:31: unknown pool 'b'"));
    sy_conf_close(&errs);
}

static void test_unknown_and_repeated(void **state)
{
    (void)state;
    sy_conf_t errs;
    assert_null(load(MIN "colour: blue\n", &errs));
    assert_true(has_error(&errs, "t.yaml:4:1: unknown top-level key 'colour'"));
    sy_conf_close(&errs);
    assert_null(load(MIN "routes: []\n", &errs));
    assert_true(has_error(&errs, "repeated"));
    sy_conf_close(&errs);
    assert_null(load("listen: [{address: 127.0.0.1:1}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                     "routes: [{name: r, legacy: a}, {name: r, legacy: a}]\n",
                     &errs));
    assert_true(has_error(&errs, "route 'r' is defined twice"));
    sy_conf_close(&errs);
}

static void test_future_sections_refused(void **state)
{
    (void)state;
    sy_conf_t errs;
    assert_null(load(MIN "postgres: {conninfo: x}\n", &errs));
    assert_true(has_error(&errs, "unknown top-level key 'postgres'")); /* not registered here */
    sy_conf_close(&errs);
    assert_null(load("listen: [{address: 127.0.0.1:1, tls: {cert: a}}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                     "routes: [{name: r, legacy: a}]\n",
                     &errs));
    assert_true(has_error(&errs, "tls needs 'cert' and 'key'"));
    sy_conf_close(&errs);
    assert_null(load("listen: [{address: 127.0.0.1:1}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                     "routes: [{name: r, legacy: a, user_key: [{jwt: sub}]}]\n",
                     &errs));
    assert_true(has_error(&errs, "give it a key"));
    sy_conf_close(&errs);
}

/* TLS settings are checked where they are written (the files themselves are
 * covered by the integration test, which makes real certificates). */
static void test_tls_settings(void **state)
{
    (void)state;
    sy_conf_t errs;
    assert_null(load("listen: [{address: 127.0.0.1:1, tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}]\n"
                     "pools: {a: {endpoints: [127.0.0.1:1]}}\nroutes: [{name: r, legacy: a}]\n",
                     &errs));
    assert_true(has_error(&errs, "t.yaml:1:38: tls cert '/nonexistent/c.pem': No such file or directory"));
    sy_conf_close(&errs);
    assert_null(load("listen: [{address: 127.0.0.1:1, tls: {cert: a, key: b, alpn: [spdy], ciphers: x}}]\n"
                     "pools: {a: {endpoints: [127.0.0.1:1]}}\nroutes: [{name: r, legacy: a}]\n",
                     &errs));
    assert_true(has_error(&errs, "alpn protocols are h2 and http/1.1"));
    assert_true(has_error(&errs, "unknown key 'ciphers' in tls"));
    sy_conf_close(&errs);
    assert_null(load("listen: [{address: 127.0.0.1:1}]\n"
                     "pools: {a: {endpoints: [127.0.0.1:1], tls: {ca: /nonexistent/ca.pem}}}\n"
                     "routes: [{name: r, legacy: a}]\n",
                     &errs));
    assert_true(has_error(&errs, "tls ca '/nonexistent/ca.pem': No such file or directory"));
    sy_conf_close(&errs);
    /* Verification off: no trust store needed; SNI and the checked name from the pool. */
    sy_config_t *cfg = load("listen: [{address: 127.0.0.1:1}]\n"
                            "pools: {a: {endpoints: [127.0.0.1:1, 'https://localhost:2'], "
                            "tls: {verify: false, sni: api.test}}, b: {endpoints: ['https://localhost:3']}}\n"
                            "routes: [{name: r, legacy: a}]\n",
                            &errs);
    assert_non_null(cfg);
    const sy_pool_t *a = sy_config_pool(cfg, "a"), *b = sy_config_pool(cfg, "b");
    assert_non_null(a->endpoints[0].tls);
    assert_string_equal(a->endpoints[0].tls_sni, "api.test");
    assert_string_equal(a->endpoints[1].tls_host, "api.test");
    assert_string_equal(b->endpoints[0].tls_sni, "localhost");
    assert_string_equal(b->endpoints[0].tls_host, "localhost");
    assert_string_not_equal(a->endpoints[0].tls_id, b->endpoints[0].tls_id);
    sy_config_release(cfg);
    sy_conf_close(&errs);
}

static void test_yaml_syntax(void **state)
{
    (void)state;
    sy_conf_t errs;
    assert_null(load("listen: [\n  {a: b\n", &errs));
    assert_true(errs.nerrors >= 1);
    assert_non_null(strstr(errs.errors[0], "t.yaml:"));
    sy_conf_close(&errs);
    assert_null(load("", &errs));
    assert_true(has_error(&errs, "empty"));
    sy_conf_close(&errs);
}

/* The reload column: a change of a restart-only key (workers, listen) is
 * reported, a change of a live key (timeouts, pools, routes) is not, and the
 * same text twice reports nothing. */
static void test_restart_keys(void **state)
{
    (void)state;
    sy_conf_t e1, e2, e3, e4;
    sy_config_t *a = load("workers: 2\ntimeouts: {connect: 1s}\n" MIN, &e1);
    sy_config_t *same = load("workers: 2\ntimeouts: {connect: 1s}\n" MIN, &e2);
    sy_config_t *live = load("workers: 2\ntimeouts: {connect: 3s}\n"
                             "listen: [{address: 127.0.0.1:8080}]\npools: {a: {endpoints: [127.0.0.1:2]}}\n"
                             "routes: [{name: r, legacy: a, salt: s2}]\n", &e3);
    sy_config_t *restart = load("workers: 3\ntimeouts: {connect: 1s}\n"
                                "listen: [{address: 127.0.0.1:8081}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                                "routes: [{name: r, legacy: a}]\n", &e4);
    assert_non_null(a);
    assert_non_null(same);
    assert_non_null(live);
    assert_non_null(restart);
    const char *keys[4];
    assert_int_equal(sy_config_restart_keys(a, same, keys, 4), 0);
    assert_int_equal(sy_config_restart_keys(a, live, keys, 4), 0);
    assert_int_equal(sy_config_restart_keys(a, restart, keys, 4), 2);
    assert_string_equal(keys[0], "workers");
    assert_string_equal(keys[1], "listen");
    assert_int_equal(sy_config_restart_keys(a, restart, keys, 1), 2); /* counted beyond cap */
    sy_config_t *cfgs[] = {a, same, live, restart};
    sy_conf_t *errs[] = {&e1, &e2, &e3, &e4};
    for (int i = 0; i < 4; i++) {
        sy_config_release(cfgs[i]);
        sy_conf_close(errs[i]);
    }
}

/* The walk behind every per-route section: one slot per route in order, the
 * route's name and sub-section handed over, an error in one route does not stop
 * the next, and a `routes` that is no list is left to routing. */
typedef struct seen {
    char name[16];
    int line; /* of the sub-section, 0: none */
} seen_t;

static int note_route(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *sub, void *slot)
{
    (void)route;
    seen_t *s = slot;
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "-");
    if (sub == NULL)
        return 0;
    s->line = (int)sub->start_mark.line + 1;
    return sy_conf_scalar(sub) != NULL ? sy_conf_error(c, sub, "no scalars here") : 0;
}

static void test_route_subsections(void **state)
{
    (void)state;
    static const char text[] = "routes:\n"
                               "  - {name: a, x: 1}\n"
                               "  - {name: b}\n"
                               "  - 7\n"
                               "  - name: d\n"
                               "    x: {k: v}\n";
    sy_conf_t c;
    assert_int_equal(sy_conf_open_string(&c, "t.yaml", text, sizeof(text) - 1), 0);
    yaml_node_t *routes = sy_conf_map_get(&c, sy_conf_root(&c), "routes");
    void *items = NULL;
    size_t n = 0;
    assert_int_equal(sy_conf_route_subsections(&c, routes, "x", sizeof(seen_t), &items, &n, note_route), SY_EINVAL);
    assert_int_equal(n, 4);
    seen_t *s = items;
    assert_string_equal(s[0].name, "a");
    assert_int_equal(s[0].line, 2);
    assert_string_equal(s[1].name, "b");
    assert_int_equal(s[1].line, 0);
    assert_string_equal(s[2].name, "-");
    assert_string_equal(s[3].name, "d");
    assert_int_equal(s[3].line, 6);
    assert_int_equal(c.nerrors, 1);
    assert_true(has_error(&c, "t.yaml:2:18: no scalars here"));
    free(items);
    /* not a list: nothing read, nothing allocated */
    yaml_node_t *root = sy_conf_root(&c);
    assert_int_equal(sy_conf_route_subsections(&c, root, "x", sizeof(seen_t), &items, &n, note_route), 0);
    assert_null(items);
    assert_int_equal(n, 0);
    sy_conf_close(&c);
}

/* A routes list with an item that is no route: an error at its position, and
 * the routes after it still parsed (a later name is looked up among the earlier
 * routes, the broken one included). */
static void test_route_not_a_mapping(void **state)
{
    (void)state;
    sy_conf_t e;
    sy_config_t *cfg = load("listen: [{address: 127.0.0.1:8080}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                            "routes:\n  - 5\n  - {name: r, legacy: b}\n", &e);
    assert_null(cfg);
    assert_true(has_error(&e, "t.yaml:4:5: expected a route"));
    assert_true(has_error(&e, "t.yaml:5:23: unknown pool 'b'"));
    sy_conf_close(&e);
}

/* A key given twice in a route: an error at the second, whose value is not
 * parsed again (a second user_key list overran the first one's array; found
 * by fuzz_config once the libraries carried coverage). */
static void test_route_key_twice(void **state)
{
    (void)state;
    sy_conf_t e;
    sy_config_t *cfg = load("listen: [{address: 127.0.0.1:8080}]\npools: {a: {endpoints: [127.0.0.1:1]}}\n"
                            "routes:\n  - name: r\n    legacy: a\n    user_key: [{header: B}, {cookie: c}, {query: q}]\n"
                            "    user_key: [{header: A}]\n", &e);
    assert_null(cfg);
    assert_true(has_error(&e, "t.yaml:7:5: key 'user_key' is repeated in this route"));
    sy_conf_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_minimal_and_defaults),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_unknown_and_repeated),
        cmocka_unit_test(test_future_sections_refused),
        cmocka_unit_test(test_tls_settings),
        cmocka_unit_test(test_yaml_syntax),
        cmocka_unit_test(test_restart_keys),
        cmocka_unit_test(test_route_subsections),
        cmocka_unit_test(test_route_not_a_mapping),
        cmocka_unit_test(test_route_key_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
