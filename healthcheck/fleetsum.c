/* The fleet's sums. See fleetsum.h. */
#include "healthcheck/fleetsum.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- one second on the wire -------------------------------------------------- */

/* [sum_us, bucket, count, ...], folded until at most SY_FLEET_HIST_PAIRS
 * buckets are left (a fold merges buckets 2k and 2k+1: neighbours, in one
 * octave, since octaves start at multiples of 64). */
static json_t *hist_json(const sy_hist_t *h)
{
    unsigned fold = 0;
    for (;; fold++) {
        unsigned n = 0, last = UINT32_MAX;
        for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
            if (h->counts[i] != 0 && (i >> fold) != last) {
                last = i >> fold;
                n++;
            }
        if (n <= SY_FLEET_HIST_PAIRS)
            break;
    }
    json_t *a = json_array();
    json_array_append_new(a, json_integer((json_int_t)h->sum_us));
    for (unsigned i = 0; i < SY_HIST_BUCKETS;) {
        unsigned base = i >> fold << fold, end = base + (1u << fold);
        uint64_t c = 0;
        for (; i < end && i < SY_HIST_BUCKETS; i++)
            c += h->counts[i];
        if (c != 0) {
            /* the group's middle bucket keeps the reported value near the group's middle */
            unsigned at = base + ((1u << fold) >> 1);
            json_array_append_new(a, json_integer(at < SY_HIST_BUCKETS ? at : base));
            json_array_append_new(a, json_integer((json_int_t)c));
        }
    }
    return a;
}

static json_t *side_json(const sy_side_t *s)
{
    if (s->requests == 0)
        return NULL;
    json_t *j = json_pack("{s:I, s:I, s:o, s:o}", "r", (json_int_t)s->requests, "e", (json_int_t)s->errors, "t",
                          hist_json(&s->total), "f", hist_json(&s->ttfb));
    if (j != NULL && s->errors != 0) {
        json_t *k = json_array();
        for (int i = 0; i < SY_XERR_KINDS; i++)
            json_array_append_new(k, json_integer((json_int_t)s->by_kind[i]));
        json_object_set_new(j, "k", k);
    }
    return j;
}

json_t *sy_fleet_second_json(int64_t second, const sy_side_t *legacy, const sy_side_t *fresh)
{
    if (legacy->requests == 0 && fresh->requests == 0)
        return NULL;
    return json_pack("{s:I, s:o*, s:o*}", "s", (json_int_t)second, "l", side_json(legacy), "n", side_json(fresh));
}

static bool count_of(const json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int hist_parse(const json_t *a, sy_hist_t *h)
{
    size_t n = json_array_size(a);
    if (!json_is_array(a) || n % 2 != 1 || !count_of(json_array_get(a, 0), UINT64_MAX >> 1, &h->sum_us))
        return -1;
    for (size_t i = 1; i + 1 < n; i += 2) {
        uint64_t b, c;
        if (!count_of(json_array_get(a, i), SY_HIST_BUCKETS - 1, &b) ||
            !count_of(json_array_get(a, i + 1), UINT32_MAX - h->counts[b], &c))
            return -1;
        h->counts[b] += (uint32_t)c;
        h->total += c;
    }
    return 0;
}

static int side_parse(const json_t *j, sy_side_t *s)
{
    memset(s, 0, sizeof(*s));
    if (j == NULL)
        return 0;
    const json_t *k = json_object_get(j, "k");
    if (!json_is_object(j) || !count_of(json_object_get(j, "r"), UINT32_MAX, &s->requests) ||
        !count_of(json_object_get(j, "e"), s->requests, &s->errors) || hist_parse(json_object_get(j, "t"), &s->total) ||
        hist_parse(json_object_get(j, "f"), &s->ttfb) || (k != NULL && json_array_size(k) != SY_XERR_KINDS))
        return -1;
    for (size_t i = 0; k != NULL && i < SY_XERR_KINDS; i++)
        if (!count_of(json_array_get(k, i), UINT32_MAX, &s->by_kind[i]))
            return -1;
    return 0;
}

int sy_fleet_second_parse(const json_t *j, int64_t *second, sy_side_t *legacy, sy_side_t *fresh)
{
    const json_t *s = json_object_get(j, "s");
    if (!json_is_integer(s) || json_integer_value(s) <= 0 || side_parse(json_object_get(j, "l"), legacy) != 0 ||
        side_parse(json_object_get(j, "n"), fresh) != 0)
        return -1;
    *second = (int64_t)json_integer_value(s);
    return 0;
}

/* --- who gave what ------------------------------------------------------------- */

void sy_fleet_cursors_begin(sy_fleet_cursors_t *c)
{
    c->round++;
}

sy_fleet_cursor_t *sy_fleet_cursor_get(sy_fleet_cursors_t *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->inst[i].id, id) == 0) {
            c->inst[i].seen = c->round;
            return &c->inst[i];
        }
    if (c->n >= SY_FLEET_MAX_INSTANCES)
        return NULL;
    sy_fleet_cursor_t *cur = &c->inst[c->n++];
    memset(cur, 0, sizeof(*cur));
    snprintf(cur->id, sizeof(cur->id), "%s", id);
    cur->seen = c->round;
    return cur;
}

bool sy_fleet_cursor_take(sy_fleet_cursor_t *cur, size_t r, int64_t second)
{
    if (r >= SY_FLEET_MAX_ROUTES || second <= cur->taken[r])
        return false;
    cur->taken[r] = second;
    return true;
}

int64_t sy_fleet_cursors_end(sy_fleet_cursors_t *c)
{
    int64_t low = 0;
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->inst[i].seen != c->round)
            continue; /* gone (its heartbeat expired): it holds nothing up */
        if (k != i)
            c->inst[k] = c->inst[i];
        if (low == 0 || c->inst[k].upto < low)
            low = c->inst[k].upto;
        k++;
    }
    c->n = k;
    return low;
}

void sy_fleet_cursors_forget_routes(sy_fleet_cursors_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        memset(c->inst[i].taken, 0, sizeof(c->inst[i].taken));
}

/* --- a route's sum ------------------------------------------------------------ */

/* a -= b: b was added to a before (a ring slot leaving the window). */
static void side_sub(sy_side_t *a, const sy_side_t *b)
{
    a->requests -= b->requests;
    a->errors -= b->errors;
    for (int k = 0; k < SY_XERR_KINDS; k++)
        a->by_kind[k] -= b->by_kind[k];
    const sy_hist_t *hb[2] = {&b->total, &b->ttfb};
    sy_hist_t *ha[2] = {&a->total, &a->ttfb};
    for (int h = 0; h < 2; h++) {
        if (hb[h]->total == 0)
            continue;
        for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
            ha[h]->counts[i] -= hb[h]->counts[i];
        ha[h]->total -= hb[h]->total;
        ha[h]->sum_us -= hb[h]->sum_us;
    }
    a->slow_seconds -= b->slow_seconds;
    a->split_seconds -= b->split_seconds;
}

sy_fleet_sum_t *sy_fleet_sum_create(const sy_trip_conf_t *c, int64_t now_s, double now)
{
    sy_fleet_sum_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->conf = c;
    s->nbuckets = c->window_ms / 1000 > 0 ? (size_t)(c->window_ms / 1000) : 1;
    s->ring = calloc(s->nbuckets * 2, sizeof(sy_side_t));
    s->stage = calloc(SY_FLEET_STAGE * 2, sizeof(sy_side_t));
    if (s->ring == NULL || s->stage == NULL) {
        sy_fleet_sum_destroy(s);
        return NULL;
    }
    s->closed = s->floor = s->ev_floor = now_s;
    s->ev_since = s->now = now;
    return s;
}

void sy_fleet_sum_destroy(sy_fleet_sum_t *s)
{
    if (s == NULL)
        return;
    free(s->ring);
    free(s->stage);
    free(s);
}

static void close_one(sy_fleet_sum_t *s)
{
    int64_t sec = ++s->closed;
    sy_side_t *st = &s->stage[(size_t)(sec % SY_FLEET_STAGE) * 2];
    sy_side_t *slot = &s->ring[(size_t)(sec % (int64_t)s->nbuckets) * 2];
    for (int v = 0; v < 2; v++) {
        side_sub(&s->window[v], &slot[v]); /* the second nbuckets before leaves */
        slot[v] = st[v];
        sy_side_add(&s->window[v], &slot[v]);
    }
    if (st[0].requests + st[1].requests > 0 && s->first == 0)
        s->first = sec;
    if (sec > s->ev_floor) {
        sy_evidence_add(&s->ev, s->conf, &st[0], &st[1]);
        sy_evidence_close_second(&s->ev);
    }
    const sy_hist_t *wo = s->conf->use_ttfb ? &s->window[0].ttfb : &s->window[0].total;
    if (sy_rules_second_compare(s->conf, wo, &slot[0], &slot[1], &s->rng))
        for (int v = 0; v < 2; v++) {
            s->window[v].split_seconds += slot[0].split_seconds;
            s->window[v].slow_seconds += slot[v].slow_seconds;
        }
    memset(st, 0, 2 * sizeof(sy_side_t));
}

/* An instance's second that came after its second closed (that instance
 * stalled): its numbers still count, in the window (while the second is in
 * it) and in the evidence, but not in the per-second units, which were
 * compared at the close. */
static void late(sy_fleet_sum_t *s, int64_t second, const sy_side_t *legacy, const sy_side_t *fresh)
{
    s->late++;
    const sy_side_t *in[2] = {legacy, fresh};
    if (s->closed - second < (int64_t)s->nbuckets) {
        sy_side_t *slot = &s->ring[(size_t)(second % (int64_t)s->nbuckets) * 2];
        for (int v = 0; v < 2; v++) {
            sy_side_t add = *in[v];
            add.slow_seconds = add.split_seconds = 0;
            sy_side_add(&slot[v], &add);
            sy_side_add(&s->window[v], &add);
        }
    }
    if (second > s->ev_floor) {
        uint64_t n[2] = {s->ev.unit_n[0], s->ev.unit_n[1]}, x[2] = {s->ev.unit_x[0], s->ev.unit_x[1]};
        sy_evidence_add(&s->ev, s->conf, legacy, fresh);
        memcpy(s->ev.unit_n, n, sizeof(n)); /* the open unit is the next second's, not this one's */
        memcpy(s->ev.unit_x, x, sizeof(x));
    }
}

bool sy_fleet_sum_add(sy_fleet_sum_t *s, int64_t second, const sy_side_t *legacy, const sy_side_t *fresh)
{
    if (second <= s->floor)
        return false;
    if (second <= s->closed) {
        late(s, second, legacy, fresh);
        return true;
    }
    while (second - s->closed > SY_FLEET_STAGE)
        close_one(s);
    sy_side_t *st = &s->stage[(size_t)(second % SY_FLEET_STAGE) * 2];
    sy_side_add(&st[0], legacy);
    sy_side_add(&st[1], fresh);
    st[0].slow_seconds = st[0].split_seconds = st[1].slow_seconds = st[1].split_seconds = 0;
    return true;
}

void sy_fleet_sum_close(sy_fleet_sum_t *s, int64_t upto, double now)
{
    s->now = now;
    if (upto - s->closed > (int64_t)s->nbuckets + SY_FLEET_STAGE) {
        /* A long silence (Redis away): the open seconds go to the evidence, the
         * window holds none of them afterwards, and the seconds between were
         * empty: skip them rather than close each. */
        for (int i = 0; i < SY_FLEET_STAGE; i++)
            close_one(s);
        memset(s->ring, 0, s->nbuckets * 2 * sizeof(sy_side_t));
        memset(s->window, 0, sizeof(s->window));
        s->closed = upto - (int64_t)s->nbuckets;
        s->first = 0;
    }
    while (s->closed < upto)
        close_one(s);
    s->ev.since_s = now - s->ev_since;
}

double sy_fleet_sum_window_s(const sy_fleet_sum_t *s)
{
    if (s->first == 0 || s->closed < s->first)
        return 0;
    int64_t n = s->closed - s->first + 1;
    return n < (int64_t)s->nbuckets ? (double)n : (double)s->nbuckets;
}

void sy_fleet_sum_evaluate(const sy_fleet_sum_t *s, sy_verdict_t *out)
{
    sy_rules_evaluate(s->conf, &s->window[0], &s->window[1], out);
    sy_rules_evaluate_evidence(s->conf, &s->ev, out);
}

void sy_fleet_sum_reset(sy_fleet_sum_t *s, int64_t now_s, double now)
{
    memset(s->ring, 0, s->nbuckets * 2 * sizeof(sy_side_t));
    memset(s->stage, 0, SY_FLEET_STAGE * 2 * sizeof(sy_side_t));
    memset(s->window, 0, sizeof(s->window));
    if (now_s > s->closed)
        s->closed = now_s;
    s->floor = s->closed;
    s->first = 0;
    sy_fleet_sum_restart_evidence(s, now_s, now);
}

void sy_fleet_sum_restart_evidence(sy_fleet_sum_t *s, int64_t now_s, double now)
{
    sy_evidence_reset(&s->ev);
    s->ev_floor = now_s;
    s->ev_since = now;
}
