#include "handlers/cli.h"

#include "flags/audit.h"
#include "flags/store.h"
#include "handlers/admin.h"
#include "handlers/ctl.h"
#include "healthcheck/notify.h"
#include "healthcheck/baseline.h"
#include "healthcheck/plan.h"
#include "healthcheck/rules.h"
#include "proxy/conf.h"
#include "proxy/shadow.h"
#include "routing/route.h"
#include "routing/router.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/switchyard/switchyard.yaml"

const sy_conf_section_t *const sy_cli_sections[] = {
    &sy_routes_section,
    &sy_redis_section,
    &sy_admin_section,
    &sy_trip_section,
    &sy_plan_section,
    &sy_baseline_section,
    &sy_notify_section,
    &sy_postgres_section,
    &sy_shadow_section,
};
const size_t sy_cli_nsections = SY_ARRAY_LEN(sy_cli_sections);
_Static_assert(SY_ARRAY_LEN(sy_cli_sections) <= SY_CONF_EXT_MAX, "raise SY_CONF_EXT_MAX");

static void usage(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  switchyard [run] -c FILE [--takeover] [--ready-fd N]\n"
            "                                    run the gateway; --takeover: take the listening sockets\n"
            "                                    of the running one (upgrade_socket), which then drains;\n"
            "                                    --ready-fd: write \"ready PID\" to fd N once serving"
            "  switchyard check -c FILE          validate a config; errors as file:line:col: message\n"
            "  switchyard cohort ROUTE USER [-c FILE] [--live]\n"
            "                                    print the bucket and variant of USER on ROUTE\n"
            "                                    (USER \"-\": one user per line from stdin); flags from\n"
            "                                    the config file, or with --live the running gateway's\n"
            "  switchyard migrate -c FILE        create or migrate the PostgreSQL schema, then exit\n"
            "  switchyard ctl [-a ADDR] [-t TOKENFILE] [--json] status|set|test-users|rollback|resume|promote|swap|plan|pause|continue|events|diffs|top ...\n"
            "                                    talk to the admin API (switchyard ctl -h for more)\n"
            "  switchyard --version\n"
            "default FILE: " DEFAULT_CONFIG "\n");
}

sy_config_t *sy_cli_load(const char *path)
{
    sy_conf_t errs;
    sy_config_t *cfg = sy_config_load(&errs, path, sy_cli_sections, sy_cli_nsections);
    if (cfg == NULL) {
        sy_conf_print_errors(&errs, stderr);
        if (errs.nerrors == 0)
            fprintf(stderr, "%s: cannot load the config (out of memory)\n", path);
    }
    sy_conf_close(&errs);
    return cfg;
}

static int cmd_check(const char *path)
{
    sy_config_t *cfg = sy_cli_load(path);
    if (cfg == NULL)
        return 2;
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    printf("%s: ok (%zu listeners, %zu pools, %zu routes, %lld workers)\n", path, cfg->nlisten, cfg->npools,
           rs ? rs->n : 0, (long long)cfg->workers);
    sy_config_release(cfg);
    return 0;
}

static int cmd_migrate(const char *path)
{
    sy_config_t *cfg = sy_cli_load(path);
    if (cfg == NULL)
        return 2;
    int rc = sy_audit_migrate(cfg);
    sy_config_release(cfg);
    return rc;
}

static int cmd_cohort(const char *path, const char *route, const char *user)
{
    sy_config_t *cfg = sy_cli_load(path);
    if (cfg == NULL)
        return 2;
    sy_routing_t *rt = sy_routing_from_config(cfg);
    int rc = 0;
    uint32_t bucket;
    sy_variant_t v;
    sy_reason_t reason;
    char line[1024];
    bool batch = strcmp(user, "-") == 0; /* one user per line on stdin */
    if (rt == NULL) {
        fprintf(stderr, "out of memory\n");
        rc = 1;
    } else if (sy_route_find(rt->routes, route) == NULL) {
        fprintf(stderr, "%s: no route named '%s'\n", path, route);
        rc = 2;
    } else {
        while (!batch || fgets(line, sizeof(line), stdin) != NULL) {
            if (batch) {
                line[strcspn(line, "\r\n")] = '\0';
                user = line;
            }
            if (sy_routing_cohort(rt, route, user, &bucket, &v, &reason) == 0)
                printf("route=%s user=%s bucket=%u variant=%s reason=%s flags=config\n", route, user, bucket,
                       sy_variant_name(v), sy_reason_name(reason));
            if (!batch)
                break;
        }
    }
    sy_routing_free(rt);
    sy_config_release(cfg);
    return rc;
}

/* ctl has options of its own: everything after the word is its, except -c
 * (before or after ctl), which names the config. */
static int cmd_ctl(int argc, char **argv, int at)
{
    const char *cfg_path = NULL;
    for (int k = 1; k < at; k++)
        if (strcmp(argv[k], "-c") == 0 && k + 1 < at)
            cfg_path = argv[k + 1];
    int n = argc - at;
    char **rest = argv + at;
    for (int k = 1; k + 1 < n; k++)
        if (strcmp(rest[k], "-c") == 0)
            cfg_path = rest[k + 1];
    char *filtered[128];
    int nf = 0;
    for (int k = 0; k < n && nf < 127; k++) {
        if (strcmp(rest[k], "-c") == 0 && k + 1 < n) {
            k++;
            continue;
        }
        filtered[nf++] = rest[k];
    }
    filtered[nf] = NULL;
    return sy_ctl_main(nf, filtered, cfg_path);
}

/* The word ctl, if it comes before any other positional argument: its index, else 0. */
static int ctl_at(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "ctl") == 0)
            return i;
        if (argv[i][0] != '-')
            break;
        if (strcmp(argv[i], "-c") == 0)
            i++;
    }
    return 0;
}

typedef struct options {
    const char *config;
    bool takeover, live;
    int ready_fd;
    const char *pos[4];
    int npos;
} options_t;

static int parse_ready_fd(const char *arg, int *out)
{
    char *end = NULL;
    int fd = arg != NULL ? (int)strtol(arg, &end, 10) : -1;
    if (fd < 3 || end == NULL || *end != '\0' || fcntl(fd, F_GETFD) < 0) {
        fprintf(stderr, "--ready-fd needs an open descriptor number (3 or more)\n");
        return -1;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    *out = fd;
    return 0;
}

/* Returns -1 to go on with the command, else the exit status. */
static int parse_options(int argc, char **argv, options_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--live") == 0) {
            o->live = true;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (++i >= argc) {
                usage(stderr);
                return 2;
            }
            o->config = argv[i];
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--takeover") == 0) {
            o->takeover = true;
        } else if (strcmp(a, "--ready-fd") == 0) {
            if (parse_ready_fd(++i < argc ? argv[i] : NULL, &o->ready_fd) != 0)
                return 2;
        } else if (strcmp(a, "--version") == 0) {
            printf("switchyard %s\n", SY_VERSION);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (o->npos < 4) {
            o->pos[o->npos++] = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    return -1;
}

int sy_cli_main(int argc, char **argv, sy_cli_run_fn run)
{
    int at = ctl_at(argc, argv);
    if (at > 0)
        return cmd_ctl(argc, argv, at);
    options_t o = {.config = DEFAULT_CONFIG, .ready_fd = -1};
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    const char *cmd = o.npos > 0 ? o.pos[0] : "run";
    if (strcmp(cmd, "run") == 0 && o.npos <= 1)
        return run(o.config, o.takeover, o.ready_fd);
    if (strcmp(cmd, "check") == 0 && o.npos == 1)
        return cmd_check(o.config);
    if (strcmp(cmd, "migrate") == 0 && o.npos == 1)
        return cmd_migrate(o.config);
    if (strcmp(cmd, "cohort") == 0 && o.npos == 3)
        return o.live ? sy_ctl_cohort_live(o.config, o.pos[1], o.pos[2]) : cmd_cohort(o.config, o.pos[1], o.pos[2]);
    usage(stderr);
    return 2;
}
