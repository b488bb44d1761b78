#include "handlers/top.h"

#include <errno.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_asked;
static bool utf8; /* the terminal's locale takes block characters */

static void on_signal(int sig)
{
    (void)sig;
    stop_asked = 1;
}

/* The screen under construction: lines cut to the terminal's width (in
 * characters; the sparklines' blocks are 3 bytes each), at most its height. */
typedef struct screen {
    char *buf;
    size_t len, cap;
    int cols, rows, line;
} screen_t;

static void put(screen_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(screen_t *s, const char *fmt, ...)
{
    if (s->line >= s->rows - 1)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* Cut at the width, counting UTF-8 characters and skipping escapes. */
    size_t keep = 0;
    int width = 0;
    for (size_t i = 0; line[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch == 0x1b) { /* CSI ... letter */
            while (line[i] != '\0' && !((line[i] >= 'A' && line[i] <= 'Z') || (line[i] >= 'a' && line[i] <= 'z')))
                i++;
            if (line[i] == '\0')
                break;
            keep = i + 1;
            continue;
        }
        if ((ch & 0xc0) != 0x80 && ++width > s->cols)
            break;
        keep = i + 1;
    }
    if (s->len + keep + 16 > s->cap) {
        size_t ncap = s->cap * 2 + keep + 4096;
        char *np = realloc(s->buf, ncap);
        if (np == NULL)
            return;
        s->buf = np;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, line, keep);
    s->len += keep;
    memcpy(s->buf + s->len, "\033[0m\033[K\r\n", 9); /* reset, clear the line's rest */
    s->len += 9;
    s->line++;
}

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static double numv(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

/* The last `n` values of an array as block characters, scaled to its maximum. */
static void sparkline(json_t *arr, size_t n, char *out, size_t cap)
{
    static const char *const blocks[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    static const char *const ascii[] = {"_", ".", ".", "-", "-", "=", "*", "#"};
    size_t total = json_array_size(arr), from = total > n ? total - n : 0, o = 0;
    double max = 0;
    for (size_t i = from; i < total; i++)
        if (json_number_value(json_array_get(arr, i)) > max)
            max = json_number_value(json_array_get(arr, i));
    out[0] = '\0';
    for (size_t i = from; i < total && o + 4 < cap; i++) {
        double v = json_number_value(json_array_get(arr, i));
        int b = max > 0 ? (int)(v / max * 7.0 + 0.5) : 0;
        const char *c = (utf8 ? blocks : ascii)[b < 0 ? 0 : b > 7 ? 7 : b];
        memcpy(out + o, c, strlen(c));
        o += strlen(c);
    }
    out[o] = '\0';
}

static json_t *history_of(json_t *history, const char *route)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(history, "routes"), i, r) if (strcmp(str(r, "name"), route) == 0) return r;
    return NULL;
}

static void draw_plan(screen_t *s, json_t *plan)
{
    if (!json_is_object(plan)) {
        put(s, "  plan: no plan");
        return;
    }
    json_t *steps = json_object_get(plan, "steps");
    long step = (long)json_integer_value(json_object_get(plan, "step"));
    char where[256];
    int n = snprintf(where, sizeof(where), "step %ld of %zu", step + 1, json_array_size(steps));
    json_t *left = json_object_get(plan, "hold_left_s");
    if (json_is_number(left) && n > 0 && (size_t)n < sizeof(where))
        n += snprintf(where + n, sizeof(where) - (size_t)n, ", %.0f s left", json_number_value(left));
    const char *wf = str(plan, "waiting_for");
    if (*wf && n > 0 && (size_t)n < sizeof(where))
        snprintf(where + n, sizeof(where) - (size_t)n, ", waiting for %s", wf);
    json_t *cur = json_array_get(steps, (size_t)step);
    put(s, "  plan: \033[1m%s\033[0m, %s (this step %.2f %%%s)", str(plan, "state"), where,
        json_integer_value(json_object_get(cur, "percent_bp")) / 100.0,
        json_is_true(json_object_get(cur, "test_users_only")) ? ", test users only" : "");
}

static void draw_route(screen_t *s, json_t *r, json_t *history)
{
    bool plain = json_is_true(json_object_get(r, "plain"));
    const char *state = plain ? "plain" : str(r, "state");
    const char *colour = strcmp(state, "tripped") == 0 ? "\033[1;31m" : strcmp(state, "ramping") == 0 ? "\033[1;33m"
                                                                       : "\033[1;32m";
    if (plain)
        put(s, "\033[1mROUTE %s\033[0m  %splain\033[0m  pool %s", str(r, "name"), colour, str(r, "legacy"));
    else
        put(s, "\033[1mROUTE %s\033[0m  %s%s\033[0m  cohort %.2f %%  test users %lld  v%lld  (%s -> %s)",
            str(r, "name"), colour, state, numv(r, "percent"),
            (long long)json_integer_value(json_object_get(r, "test_users_count")),
            (long long)json_integer_value(json_object_get(r, "version")), str(r, "legacy"), str(r, "new"));
    if (!plain)
        draw_plan(s, json_object_get(r, "plan"));
    json_t *w = json_object_get(r, "window");
    if (!json_is_object(w))
        return;
    put(s, "  %-7s %9s %9s %9s %9s %9s  last minute, req/s", "side", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms");
    json_t *h = history_of(history, str(r, "name"));
    static const char *const sides[] = {"legacy", "new"};
    for (int i = 0; i < (plain ? 1 : 2); i++) {
        json_t *sd = json_object_get(w, sides[i]);
        if (!json_is_object(sd))
            continue;
        char spark[64 * 3 + 1] = "";
        if (s->cols >= 100)
            sparkline(json_object_get(json_object_get(h, sides[i]), "requests"), 60, spark, sizeof(spark));
        put(s, "  %s%-7s\033[0m %9.1f %8.2f%% %9.1f %9.1f %9.1f  %s", i == 0 ? "\033[34m" : "\033[33m", sides[i],
            numv(sd, "rps"), numv(sd, "error_rate") * 100.0, numv(sd, "p50_ms"), numv(sd, "p95_ms"),
            numv(sd, "p99_ms"), spark);
        /* the counts apart, so that they stay readable in a narrow terminal */
        put(s, "  %-7s %9s (%lld errors of %lld requests in %.0f s)", "", "",
            (long long)json_integer_value(json_object_get(sd, "errors")),
            (long long)json_integer_value(json_object_get(sd, "requests")), numv(w, "seconds"));
    }
    const char *verdict = str(w, "verdict");
    if (*verdict && strcmp(verdict, "ok") != 0)
        put(s, "  %s%s\033[0m %s %s", strcmp(verdict, "trip") == 0 ? "\033[1;31m" : "\033[33m", verdict,
            str(w, "rule"), str(w, "detail"));
}

static void draw_pool(screen_t *s, json_t *p)
{
    bool colored = json_is_true(json_object_get(p, "colored"));
    if (colored)
        put(s, "\033[1mPOOL %s\033[0m  active \033[1m%s\033[0m  draining %lld", str(p, "name"), str(p, "active"),
            (long long)json_integer_value(json_object_get(p, "draining")));
    else
        put(s, "\033[1mPOOL %s\033[0m", str(p, "name"));
    json_t *colors = json_object_get(p, "colors");
    static const char *const names[] = {"blue", "green"};
    for (int k = 0; colored && k < 2; k++) {
        json_t *c = json_object_get(colors, names[k]);
        if (json_is_object(c))
            put(s, "  %-6s%s requests %lld  errors %lld (%.2f%%)  p50 %.1f  p99 %.1f ms  in flight %lld", names[k],
                json_is_true(json_object_get(c, "active")) ? "*" : " ",
                (long long)json_integer_value(json_object_get(c, "requests")),
                (long long)json_integer_value(json_object_get(c, "errors")), numv(c, "error_rate") * 100.0,
                numv(c, "p50_ms"), numv(c, "p99_ms"), (long long)json_integer_value(json_object_get(c, "in_flight")));
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(p, "endpoints"), i, e) {
        bool up = json_is_true(json_object_get(e, "up"));
        put(s, "    %-24s %-6s %s%-4s\033[0m in flight %lld", str(e, "endpoint"), str(e, "color"),
            up ? "\033[32m" : "\033[1;31m", up ? "up" : "DOWN",
            (long long)json_integer_value(json_object_get(e, "in_flight")));
    }
}

static void draw(screen_t *s, const char *addr, json_t *status, json_t *history, json_t *events, const char *err)
{
    char now[16];
    time_t t = time(NULL);
    strftime(now, sizeof(now), "%H:%M:%S", localtime(&t));
    json_t *redis = json_object_get(status, "redis");
    put(s, "\033[7m switchyard top  %s  %s  flags from %s, redis %s \033[0m  q to quit", addr, now,
        str(status, "flags_from"),
        !json_is_true(json_object_get(redis, "configured")) ? "not configured"
        : json_is_true(json_object_get(redis, "connected")) ? "connected"
                                                            : "DISCONNECTED");
    if (err != NULL)
        put(s, "\033[1;31m%s\033[0m", err);
    put(s, "%s", "");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(status, "routes"), i, x) {
        draw_route(s, x, history);
        put(s, "%s", "");
    }
    json_array_foreach(json_object_get(status, "pools"), i, x) draw_pool(s, x);
    put(s, "%s", "");
    if (!json_is_array(events)) {
        put(s, "\033[2mevents: the record is not available\033[0m");
        return;
    }
    put(s, "\033[1mEVENTS\033[0m");
    json_array_foreach(events, i, x) {
        if (i >= 8)
            break;
        const char *route = str(x, "route");
        put(s, "  %.19s  %-12s %-12s %-10s %s", str(x, "at"), str(x, "kind"), *route ? route : str(x, "pool"),
            str(x, "actor"), str(x, "reason"));
    }
}

static json_t *get_json(sy_top_request_fn request, const char *addr, const char *token, const char *path, int *status)
{
    char *body = NULL;
    *status = request(addr, token, "GET", path, NULL, &body);
    json_t *j = *status == 200 && body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

/* Waits up to ms for a key; true when it is q (or the input closed). */
static bool wait_for_quit(bool tty, int ms)
{
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    if (!tty) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return false;
    }
    int n = poll(&p, 1, ms);
    if (n <= 0)
        return false;
    char ch;
    ssize_t r = read(STDIN_FILENO, &ch, 1);
    return r == 0 || (r == 1 && (ch == 'q' || ch == 'Q' || ch == 3 /* ^C in raw mode */));
}

int sy_top_run(const char *addr, const char *token, sy_top_request_fn request)
{
    int status = 0;
    json_t *st = get_json(request, addr, token, "/status", &status);
    if (st == NULL) {
        if (status != 0)
            fprintf(stderr, "ctl top: GET /status answered %d%s\n", status,
                    status == 401 ? " (reads need the token here: -t TOKENFILE)" : "");
        return 1;
    }
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    utf8 = setlocale(LC_CTYPE, "") != NULL && strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
    struct termios saved, raw;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        tty = false;
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (tty)
        fputs("\033[?1049h\033[?25l", stdout); /* the alternate screen, no cursor */
    screen_t s = {0};
    json_t *events = NULL;
    time_t events_at = 0;
    while (!stop_asked) {
        struct winsize ws;
        s.cols = 120;
        s.rows = 60;
        if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
            s.cols = ws.ws_col;
            s.rows = ws.ws_row;
        }
        if (st == NULL)
            st = get_json(request, addr, token, "/status", &status);
        json_t *hist = get_json(request, addr, token, "/history?seconds=60", &(int){0});
        if (time(NULL) - events_at >= 3) {
            json_decref(events);
            events = get_json(request, addr, token, "/events?limit=8", &(int){0});
            events_at = time(NULL);
        }
        char err[128] = "";
        if (st == NULL)
            snprintf(err, sizeof(err), "GET /status: %s", status ? "refused" : "the gateway does not answer");
        s.len = 0;
        s.line = 0;
        draw(&s, addr, st, hist, events, *err ? err : NULL);
        fputs(tty ? "\033[H" : "\n", stdout);
        fwrite(s.buf, 1, s.len, stdout);
        if (tty)
            fputs("\033[J", stdout); /* clear what the previous frame had below */
        fflush(stdout);
        json_decref(hist);
        json_decref(st);
        st = NULL;
        if (wait_for_quit(tty, 1000))
            break;
    }
    json_decref(st);
    json_decref(events);
    free(s.buf);
    if (tty) {
        fputs("\033[?25h\033[?1049l", stdout);
        fflush(stdout);
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return 0;
}
