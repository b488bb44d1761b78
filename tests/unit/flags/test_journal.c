/* The journal on real files in a temporary directory: delivery in order,
 * acknowledgement and trimming, replay after a restart, a torn last line, the
 * bound (windows dropped oldest first, events refused loudly, never silently),
 * rewind. */
#include "flags/journal.h"

#include <dirent.h>
#include <ev.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct got {
    int calls;
    sy_jstream_t s;
    uint64_t first, last;
    char *json;
} got_t;

static void on_batch(void *ud, sy_jstream_t s, uint64_t first, uint64_t last, char *json, size_t len)
{
    got_t *g = ud;
    (void)len;
    g->calls++;
    g->s = s;
    g->first = first;
    g->last = last;
    free(g->json);
    g->json = json;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop until a batch arrives (or 5 s pass). */
static bool wait_batch(struct ev_loop *loop, sy_journal_t *j, sy_jstream_t s, size_t max, got_t *g)
{
    int before = g->calls;
    sy_journal_want(j, s, max, 1 << 20, on_batch, g);
    ev_timer t;
    ev_timer_init(&t, timeout_cb, 5., 0.);
    ev_timer_start(loop, &t);
    while (g->calls == before && ev_is_active(&t))
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return g->calls > before;
}

/* Waits until the journal thread has written what was appended (all of it
 * durable, so that a batch asked for next can hold all of it). */
static void settle(sy_journal_t *j)
{
    sy_journal_stats_t st;
    for (int i = 0; i < 10000; i++) {
        sy_journal_stats(j, &st);
        if (st.queued == 0)
            break;
        usleep(1000);
    }
    usleep(5000);
}

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sy-journal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void append_n(sy_journal_t *j, sy_jstream_t s, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char line[64];
        int len = snprintf(line, sizeof(line), "{\"n\":%d}", i);
        assert_int_equal(sy_journal_append(j, s, line, (size_t)len), 0);
    }
}

static void test_deliver_ack_restart(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    sy_journal_t *j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_non_null(j);
    append_n(j, SY_JOURNAL_EVENTS, 1, 10);
    settle(j); /* a batch holds what is durable: all ten, or the sizes below vary */
    got_t g = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 4, &g));
    assert_int_equal(g.first, 1);
    assert_int_equal(g.last, 4);
    assert_string_equal(g.json, "[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4}]");
    sy_journal_ack(j, SY_JOURNAL_EVENTS, 4);
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 100, &g));
    assert_int_equal(g.first, 5);
    assert_int_equal(g.last, 10);
    /* 5..10 were handed out, not acknowledged: a restart hands them out again */
    sy_journal_close(j);

    j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_non_null(j);
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 100, &g));
    assert_int_equal(g.first, 5);
    assert_int_equal(g.last, 10);
    assert_string_equal(g.json, "[{\"n\":5},{\"n\":6},{\"n\":7},{\"n\":8},{\"n\":9},{\"n\":10}]");
    sy_journal_ack(j, SY_JOURNAL_EVENTS, 10);
    append_n(j, SY_JOURNAL_EVENTS, 11, 1); /* numbering goes on */
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 100, &g));
    assert_int_equal(g.first, 11);
    sy_journal_ack(j, SY_JOURNAL_EVENTS, 11);
    settle(j);
    sy_journal_close(j);

    /* everything acknowledged: the segments are gone, the ack file keeps the numbering */
    j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    sy_journal_stats_t st;
    sy_journal_stats(j, &st);
    assert_int_equal(st.next[SY_JOURNAL_EVENTS], 12);
    assert_int_equal(st.acked[SY_JOURNAL_EVENTS], 11);
    assert_int_equal(st.bytes, 0);
    sy_journal_close(j);
    free(g.json);
    ev_loop_destroy(loop);
}

static void test_torn_line(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    sy_journal_t *j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    append_n(j, SY_JOURNAL_EVENTS, 1, 3);
    settle(j);
    sy_journal_close(j);
    /* a crash in the middle of a write leaves half a line */
    char path[128];
    snprintf(path, sizeof(path), "%s/events.%020d", dir, 1);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"n\":4", 6), 6);
    close(fd);
    j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_non_null(j);
    append_n(j, SY_JOURNAL_EVENTS, 4, 1);
    settle(j);
    got_t g = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 100, &g));
    assert_string_equal(g.json, "[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4}]");
    assert_int_equal(g.last, 4);
    sy_journal_close(j);
    free(g.json);
    ev_loop_destroy(loop);
}

static void test_bound(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    /* 16 KiB, segments of 4 KiB; lines of ~100 bytes */
    sy_journal_t *j = sy_journal_open(loop, dir, 16384, err, sizeof(err));
    assert_non_null(j);
    char pad[90];
    memset(pad, 'w', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    char line[160];
    for (int i = 1; i <= 120; i++) { /* ~12 KiB of windows */
        int len = snprintf(line, sizeof(line), "{\"w\":%d,\"p\":\"%s\"}", i, pad);
        assert_int_equal(sy_journal_append(j, SY_JOURNAL_WINDOWS, line, (size_t)len), 0);
    }
    settle(j);
    for (int i = 1; i <= 100; i++) { /* ~10 KiB of events: the oldest windows must go */
        int len = snprintf(line, sizeof(line), "{\"e\":%d,\"p\":\"%s\"}", i, pad);
        assert_int_equal(sy_journal_append(j, SY_JOURNAL_EVENTS, line, (size_t)len), 0);
    }
    settle(j);
    sy_journal_stats_t st;
    sy_journal_stats(j, &st);
    assert_true(st.bytes <= 16384);
    assert_int_equal(st.dropped[SY_JOURNAL_EVENTS], 0);
    assert_true(st.dropped[SY_JOURNAL_WINDOWS] > 0);
    /* every event is there, in order */
    got_t g = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 1000, &g));
    assert_int_equal(g.first, 1);
    assert_int_equal(g.last, 100);
    /* the windows that are left are the newest */
    got_t w = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_WINDOWS, 1000, &w));
    assert_int_equal(w.last, 120);
    assert_true(w.first > 1);
    assert_int_equal(w.first - 1, st.dropped[SY_JOURNAL_WINDOWS]);
    /* only events left and still more: refused (and logged), not written over the bound */
    for (int i = 101; i <= 200; i++) {
        int len = snprintf(line, sizeof(line), "{\"e\":%d,\"p\":\"%s\"}", i, pad);
        assert_int_equal(sy_journal_append(j, SY_JOURNAL_EVENTS, line, (size_t)len), 0);
    }
    settle(j);
    sy_journal_stats(j, &st);
    assert_true(st.bytes <= 16384);
    assert_true(st.dropped[SY_JOURNAL_EVENTS] > 0);
    assert_int_equal(st.next[SY_JOURNAL_EVENTS] - 1 + st.dropped[SY_JOURNAL_EVENTS], 200);
    /* PostgreSQL takes them: room again */
    sy_journal_ack(j, SY_JOURNAL_EVENTS, st.next[SY_JOURNAL_EVENTS] - 1);
    sy_journal_ack(j, SY_JOURNAL_WINDOWS, 120);
    settle(j);
    int len = snprintf(line, sizeof(line), "{\"e\":%d}", 201);
    assert_int_equal(sy_journal_append(j, SY_JOURNAL_EVENTS, line, (size_t)len), 0);
    settle(j);
    sy_journal_stats_t st2;
    sy_journal_stats(j, &st2);
    assert_int_equal(st2.dropped[SY_JOURNAL_EVENTS], st.dropped[SY_JOURNAL_EVENTS]);
    sy_journal_close(j);
    free(g.json);
    free(w.json);
    ev_loop_destroy(loop);
}

static void test_rewind_and_bad_lines(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    sy_journal_t *j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_int_equal(sy_journal_append(j, SY_JOURNAL_EVENTS, "{\"a\":\n1}", 8), SY_EINVAL);
    assert_int_equal(sy_journal_append(j, SY_JOURNAL_EVENTS, "", 0), SY_EINVAL);
    append_n(j, SY_JOURNAL_EVENTS, 1, 5);
    settle(j);
    got_t g = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 2, &g));
    assert_int_equal(g.last, 2);
    sy_journal_ack(j, SY_JOURNAL_EVENTS, 1);
    sy_journal_rewind(j, SY_JOURNAL_EVENTS); /* the insert of 1..2 failed after 1 was acknowledged */
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 10, &g));
    assert_int_equal(g.first, 2);
    assert_int_equal(g.last, 5);
    sy_journal_close(j);
    free(g.json);
    ev_loop_destroy(loop);
}

static void on_sync(void *ud, bool durable)
{
    int *n = ud;
    *n += durable ? 1 : 100;
}

static void test_sync_waits_for_the_disk(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    sy_journal_t *j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    int synced = 0;
    sy_journal_sync(j, on_sync, &synced); /* nothing appended: at once */
    assert_int_equal(synced, 1);
    append_n(j, SY_JOURNAL_EVENTS, 1, 50);
    sy_journal_sync(j, on_sync, &synced);
    sy_journal_sync(j, on_sync, &synced);
    ev_timer t;
    ev_timer_init(&t, timeout_cb, 5., 0.);
    ev_timer_start(loop, &t);
    while (synced < 3 && ev_is_active(&t))
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    assert_int_equal(synced, 3);
    sy_journal_stats_t st;
    sy_journal_stats(j, &st);
    assert_int_equal(st.durable[SY_JOURNAL_EVENTS], 50); /* on disk before the callbacks ran */
    /* a waiter still there at close is called after the final flush */
    append_n(j, SY_JOURNAL_EVENTS, 51, 1);
    sy_journal_sync(j, on_sync, &synced);
    sy_journal_close(j);
    assert_int_equal(synced, 4);
    ev_loop_destroy(loop);
}

/* Two processes on one directory (a binary upgrade): the second waits for the
 * first to let go, then numbers its records after the first one's. (Two opens
 * in one process hold two locks, as two processes do.) */
static void test_held_by_another(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200];
    sy_journal_t *old = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_non_null(old);
    append_n(old, SY_JOURNAL_EVENTS, 1, 3);
    settle(old);
    sy_journal_t *j = sy_journal_open(loop, dir, 1 << 20, err, sizeof(err));
    assert_non_null(j);
    append_n(j, SY_JOURNAL_EVENTS, 100, 1); /* the new one's first record waits */
    append_n(old, SY_JOURNAL_EVENTS, 4, 1); /* the old one's last, while it drains */
    settle(old);
    usleep(100 * 1000);
    sy_journal_stats_t st;
    sy_journal_stats(j, &st);
    assert_int_equal(st.durable[SY_JOURNAL_EVENTS], 0);
    assert_int_equal(st.queued, 1);
    sy_journal_close(old);
    settle(j);
    got_t g = {0};
    assert_true(wait_batch(loop, j, SY_JOURNAL_EVENTS, 100, &g));
    assert_int_equal(g.first, 1);
    assert_int_equal(g.last, 5);
    assert_string_equal(g.json, "[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4},{\"n\":100}]");
    sy_journal_close(j);
    free(g.json);
    ev_loop_destroy(loop);
}

static void test_unusable_dir(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[200] = "";
    assert_null(sy_journal_open(loop, "/proc/sy-no-such/journal", 1 << 20, err, sizeof(err)));
    assert_non_null(strstr(err, "journal directory"));
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deliver_ack_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewind_and_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_waits_for_the_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_by_another, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
