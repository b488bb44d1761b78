/* Route matching, user-key extraction (header, cookie, query), CIDRs, and the
 * router hook end to end on a config loaded from text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/config.h"
#include "proxy/snapshot.h"
#include "routing/route.h"
#include "routing/router.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const sy_conf_section_t *const sections[] = {&sy_routes_section};

static const char *CFG = "listen: [{address: 127.0.0.1:8080}]\n"
                         "pools:\n"
                         "  L: {endpoints: [127.0.0.1:7001]}\n"
                         "  N: {endpoints: [127.0.0.1:7002, 127.0.0.1:7003]}\n"
                         "routes:\n"
                         "  - {name: root, legacy: L}\n"
                         "  - name: nav\n"
                         "    match: {path_prefix: /nav}\n"
                         "    user_key: [{header: X-User-Id}, {cookie: uid}, {query: user}]\n"
                         "    legacy: L\n"
                         "    new: N\n"
                         "    percent_bp: 2500\n"
                         "    test_users: [\"42\", admin-7]\n"
                         "    override: {header: X-Switchyard-Variant, trusted_cidrs: [127.0.0.0/8, '::1/128']}\n"
                         "  - {name: navapi, match: {host: api.example, path_prefix: /nav}, legacy: L}\n"
                         "  - {name: wild, match: {host: '*.example', path_prefix: /nav/deep}, legacy: L}\n";

static sy_config_t *cfg;
static sy_epstate_t *eps; /* the endpoints' state the snapshots carry (down marks) */

static int setup(void **state)
{
    (void)state;
    sy_conf_t errs;
    cfg = sy_config_load_string(&errs, "t.yaml", CFG, sections, 1);
    sy_conf_print_errors(&errs, stderr);
    sy_conf_close(&errs);
    if (cfg == NULL)
        return 1;
    size_t n = 0;
    for (size_t i = 0; i < cfg->npools; i++)
        n += cfg->pools[i].nendpoints;
    eps = sy_epstate_alloc(n, 1);
    return eps == NULL;
}

static int teardown(void **state)
{
    (void)state;
    sy_epstate_release(eps);
    sy_config_release(cfg);
    return 0;
}

static const char *match(const char *host, const char *path)
{
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_t *r = sy_route_match(rs, host, host ? strlen(host) : 0, path, strlen(path));
    return r ? r->name : NULL;
}

static void test_matching(void **state)
{
    (void)state;
    assert_string_equal(match("x", "/"), "root");
    assert_string_equal(match("x", "/navigation"), "nav"); /* plain prefix, like nginx */
    assert_string_equal(match("x", "/nav/a"), "nav");
    assert_string_equal(match("api.example", "/nav/a"), "navapi"); /* exact host beats * on a tie */
    assert_string_equal(match("API.example:8080", "/nav/a"), "navapi");
    assert_string_equal(match("a.example", "/nav/deep/x"), "wild"); /* longest prefix wins */
    assert_string_equal(match("example", "/nav/deep/x"), "nav");   /* *.example needs a subdomain */
    assert_string_equal(match(NULL, "/nav"), "nav");
}

static void test_cookie_and_query(void **state)
{
    (void)state;
    char out[300];
    const char *c = "a=1; uid=\"77\" ; theme=dark";
    assert_int_equal(sy_cookie_value(c, strlen(c), "uid", out, sizeof(out)), 2);
    assert_string_equal(out, "77");
    assert_int_equal(sy_cookie_value(c, strlen(c), "id", out, sizeof(out)), 0);
    assert_int_equal(sy_cookie_value("uid=", 4, "uid", out, sizeof(out)), 0);
    const char *q = "x=1&user=a%20b%2Bc&user=2";
    assert_int_equal(sy_query_value(q, strlen(q), "user", out, sizeof(out)), 5);
    assert_string_equal(out, "a b+c");
    assert_int_equal(sy_query_value("users=1", 7, "user", out, sizeof(out)), 0);
    assert_int_equal(sy_query_value("user=%zz", 8, "user", out, sizeof(out)), 3);
}

static void test_cidr(void **state)
{
    (void)state;
    sy_cidr_t c;
    struct sockaddr_in a = {.sin_family = AF_INET};
    assert_int_equal(sy_cidr_parse("10.1.0.0/16", &c), 0);
    inet_pton(AF_INET, "10.1.200.3", &a.sin_addr);
    assert_true(sy_cidr_contains(&c, (struct sockaddr *)&a));
    inet_pton(AF_INET, "10.2.0.1", &a.sin_addr);
    assert_false(sy_cidr_contains(&c, (struct sockaddr *)&a));
    assert_int_equal(sy_cidr_parse("10.0.0.0/33", &c), -1);
    assert_int_equal(sy_cidr_parse("nope", &c), -1);
    struct sockaddr_in6 b = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &b.sin6_addr);
    assert_int_equal(sy_cidr_parse("127.0.0.0/8", &c), 0);
    assert_true(sy_cidr_contains(&c, (struct sockaddr *)&b));
}

static sy_decision_t decide(const char *path, sy_header_t *hs, size_t n, const char *ip)
{
    sy_routing_t *rt = sy_routing_from_config(cfg);
    sy_snapshot_t *snap = sy_snapshot_create(cfg, rt, sy_routing_free);
    snap->eps = sy_epstate_ref(eps);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &a.sin_addr);
    const char *q = strchr(path, '?');
    sy_request_view_t v = {.method = "GET", .path = path, .path_len = q ? (size_t)(q - path) : strlen(path),
                           .query = q ? q + 1 : NULL, .query_len = q ? strlen(q + 1) : 0,
                           .headers = hs, .nheaders = n, .client = (struct sockaddr *)&a};
    sy_decision_t d;
    memset(&d, 0, sizeof(d));
    sy_router.decide(NULL, snap, &v, 0, &d);
    sy_snapshot_release(snap);
    return d;
}

static void test_router_decisions(void **state)
{
    (void)state;
    sy_header_t tu[] = {{"X-User-Id", 9, "42", 2}};
    sy_decision_t d = decide("/nav", tu, 1, "10.0.0.1");
    assert_string_equal(d.variant, "new");
    assert_string_equal(d.reason, "test_user");
    assert_string_equal(d.user, "42");
    assert_non_null(d.endpoint);
    assert_string_equal(d.endpoint->name, "127.0.0.1:7002");

    sy_header_t ov[] = {{"X-User-Id", 9, "42", 2}, {"X-Switchyard-Variant", 20, "legacy", 6}};
    d = decide("/nav", ov, 2, "127.0.0.1");
    assert_string_equal(d.reason, "override");
    assert_string_equal(d.variant, "legacy");
    d = decide("/nav", ov, 2, "192.0.2.1"); /* untrusted: ignored */
    assert_string_equal(d.reason, "test_user");

    d = decide("/nav?user=admin-7", NULL, 0, "10.0.0.1");
    assert_string_equal(d.reason, "test_user");
    d = decide("/nav", NULL, 0, "10.0.0.1");
    assert_string_equal(d.reason, "default");
    assert_string_equal(d.variant, "legacy");
    d = decide("/", NULL, 0, "10.0.0.1");
    assert_string_equal(d.route, "root");

    /* Endpoint marked down by health checks: skipped; all down: 503. */
    const sy_pool_t *n = sy_config_pool(cfg, "N");
    atomic_store(&eps->slots[n->endpoints[0].index].down, 1);
    d = decide("/nav", tu, 1, "10.0.0.1");
    assert_string_equal(d.endpoint->name, "127.0.0.1:7003");
    atomic_store(&eps->slots[n->endpoints[1].index].down, 1);
    d = decide("/nav", tu, 1, "10.0.0.1"); /* all of new down: served by legacy */
    assert_non_null(d.endpoint);
    assert_string_equal(d.endpoint->name, "127.0.0.1:7001");
    assert_string_equal(d.variant, "legacy");
    const sy_pool_t *l = sy_config_pool(cfg, "L");
    atomic_store(&eps->slots[l->endpoints[0].index].down, 1);
    d = decide("/nav", tu, 1, "10.0.0.1"); /* and legacy too: 503 */
    assert_null(d.endpoint);
    assert_int_equal(d.status, 503);
    atomic_store(&eps->slots[l->endpoints[0].index].down, 0);
    atomic_store(&eps->slots[n->endpoints[0].index].down, 0);
    atomic_store(&eps->slots[n->endpoints[1].index].down, 0);
}

static bool marked(const void *ud, const sy_snapshot_t *snap, int route)
{
    (void)snap;
    return *(const int *)ud == route;
}

/* A route marked tripped by the data path routes as tripped before its flags
 * say so; a connect failure on new falls back to legacy, except for an
 * override asking for new, and never from legacy. */
static void test_marks_and_fallback(void **state)
{
    (void)state;
    sy_routing_t *rt = sy_routing_from_config(cfg);
    sy_snapshot_t *snap = sy_snapshot_create(cfg, rt, sy_routing_free);
    snap->eps = sy_epstate_ref(eps);
    sy_header_t tu[] = {{"X-User-Id", 9, "42", 2}};
    sy_request_view_t v = {.method = "GET", .path = "/nav", .path_len = 4, .headers = tu, .nheaders = 1};
    int which = -1;
    sy_trip_marks_t marks = {.tripped = marked, .ud = &which};
    sy_router_t router = sy_router_with_marks(&marks);
    sy_decision_t d;
    memset(&d, 0, sizeof(d));
    router.decide(router.ctx, snap, &v, 0, &d);
    assert_string_equal(d.variant, "new");
    which = d.route_index;
    memset(&d, 0, sizeof(d));
    router.decide(router.ctx, snap, &v, 0, &d);
    assert_string_equal(d.variant, "legacy");
    assert_string_equal(d.reason, "tripped");
    which = -1;

    memset(&d, 0, sizeof(d));
    router.decide(router.ctx, snap, &v, 0, &d);
    sy_decision_t f;
    assert_int_equal(router.fallback(router.ctx, snap, &d, "connect", 0, &f), 0);
    assert_string_equal(f.variant, "legacy");
    assert_string_equal(f.reason, "fallback");
    assert_string_equal(f.fallback, "connect");
    assert_string_equal(f.endpoint->name, "127.0.0.1:7001");
    assert_string_equal(f.user, "42");
    assert_int_equal(router.fallback(router.ctx, snap, &f, "connect", 0, &d), SY_EDECLINED);

    sy_header_t ov[] = {{"X-Switchyard-Variant", 20, "new", 3}};
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    sy_request_view_t vo = {.method = "GET", .path = "/nav", .path_len = 4, .headers = ov, .nheaders = 1,
                            .client = (struct sockaddr *)&a};
    memset(&d, 0, sizeof(d));
    router.decide(router.ctx, snap, &vo, 0, &d);
    assert_string_equal(d.reason, "override");
    assert_string_equal(d.variant, "new");
    assert_int_equal(router.fallback(router.ctx, snap, &d, "connect", 0, &f), SY_EDECLINED);
    sy_snapshot_release(snap);
}

static void test_cohort_cli_path(void **state)
{
    (void)state;
    sy_routing_t *rt = sy_routing_from_config(cfg);
    uint32_t b;
    sy_variant_t v;
    sy_reason_t r;
    assert_int_equal(sy_routing_cohort(rt, "nav", "42", &b, &v, &r), 0);
    assert_int_equal(v, SY_NEW);
    assert_int_equal(b, sy_cohort_bucket("nav", 3, "42", 2));
    assert_int_equal(sy_routing_cohort(rt, "nope", "42", &b, &v, &r), -1);
    sy_routing_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_cookie_and_query),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_router_decisions),
        cmocka_unit_test(test_marks_and_fallback),
        cmocka_unit_test(test_cohort_cli_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
