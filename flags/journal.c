/* The journal. See journal.h.
 *
 * The control thread and the journal thread share one mutex. Under it: the
 * append queue, each stream's want/ready slots, ack and rewind requests, and the
 * numbers stats() reports. Everything else (segment lists, fds, cursors) belongs
 * to the journal thread alone, or to the opener before the thread starts. */
#include "flags/journal.h"

#include "proxy/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUEUE_MAX_BYTES (8u * 1024 * 1024)
#define MAX_WAITERS 1024
#define READ_CHUNK (256u * 1024)

typedef struct qrec {
    struct qrec *next;
    sy_jstream_t stream;
    size_t len;
    char data[];
} qrec_t;

typedef struct seg {
    uint64_t first, count, bytes;
} seg_t;

typedef struct stream {
    const char *name;
    /* journal thread */
    seg_t *segs;
    size_t nsegs, cap;
    int fd;                 /* the last segment, open for appending; -1: none */
    uint64_t next;          /* number of the next record written */
    uint64_t acked, ack_saved;
    uint64_t read_next;     /* next record to hand out */
    uint64_t cur_seg, cur_off, cur_seq; /* read cursor: segment (by first), offset, record there */
    bool cur_valid;
    uint64_t bound_warned;  /* drops already reported */
    /* under the lock */
    uint64_t durable, ack_req, dropped, acked_pub, next_pub;
    bool rewind_req;
    bool want;
    size_t want_records, want_bytes;
    sy_journal_batch_fn want_cb;
    void *want_ud;
    char *ready;
    size_t ready_len;
    uint64_t ready_first, ready_last;
    sy_journal_batch_fn ready_cb;
    void *ready_ud;
} stream_t;

struct sy_journal {
    struct ev_loop *loop;
    char *dir;
    int dirfd;
    uint64_t max_bytes, seg_max;
    uint64_t bytes; /* segments on disk (journal thread; published under the lock) */
    pthread_t thread;
    bool started;
    bool held_elsewhere;    /* another process had the directory's lock at open: recover on the thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closing;
    qrec_t *head, *tail;
    size_t queued_bytes;
    uint64_t accepted, processed; /* records appended / taken care of by the thread */
    stream_t st[SY_JOURNAL_STREAMS];
    uint64_t fsyncs, bytes_pub;
    char last_error[160];
    char *rbuf;             /* journal thread: read buffer */
    size_t rcap;
    ev_async async;
    /* control thread: sync waiters, in ticket order */
    struct waiter {
        uint64_t ticket;
        sy_journal_sync_fn cb;
        void *ud;
    } waiters[MAX_WAITERS];
    size_t nwaiters;
};

/* --- files (journal thread, or the opener before it starts) ----------------- */

static void seg_path(const sy_journal_t *j, const stream_t *st, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.%020" PRIu64, j->dir, st->name, first);
}

static void note_error(sy_journal_t *j, const char *what, const char *detail)
{
    sy_error("journal %s: %s: %s", j->dir, what, detail);
    pthread_mutex_lock(&j->mu);
    snprintf(j->last_error, sizeof(j->last_error), "%.60s: %.90s", what, detail);
    pthread_mutex_unlock(&j->mu);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ack files: one decimal number, replaced by rename so a crash leaves the old or the new. */
static int save_ack(sy_journal_t *j, stream_t *st)
{
    if (st->ack_saved == st->acked)
        return 0;
    char tmp[64], name[64], line[32];
    snprintf(tmp, sizeof(tmp), "%s.ack.tmp", st->name);
    snprintf(name, sizeof(name), "%s.ack", st->name);
    int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", st->acked);
    int fd = openat(j->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, line, (size_t)n) != 0 || fdatasync(fd) != 0) {
        if (fd >= 0)
            close(fd);
        note_error(j, "cannot write the ack file", strerror(errno));
        return -1;
    }
    close(fd);
    if (renameat(j->dirfd, tmp, j->dirfd, name) != 0) {
        note_error(j, "cannot rename the ack file", strerror(errno));
        return -1;
    }
    fsync(j->dirfd);
    st->ack_saved = st->acked;
    return 0;
}

static uint64_t load_ack(sy_journal_t *j, const stream_t *st)
{
    char name[64], line[32] = "";
    snprintf(name, sizeof(name), "%s.ack", st->name);
    int fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, line, sizeof(line) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    line[n] = '\0';
    return strtoull(line, NULL, 10);
}

static void remove_seg(sy_journal_t *j, stream_t *st, size_t k)
{
    char path[1100];
    seg_path(j, st, st->segs[k].first, path, sizeof(path));
    if (k == st->nsegs - 1 && st->fd >= 0) {
        close(st->fd);
        st->fd = -1;
    }
    if (unlink(path) != 0 && errno != ENOENT)
        note_error(j, "cannot delete a segment", strerror(errno));
    j->bytes -= st->segs[k].bytes;
    if (st->cur_valid && st->cur_seg == st->segs[k].first)
        st->cur_valid = false;
    memmove(&st->segs[k], &st->segs[k + 1], (st->nsegs - k - 1) * sizeof(seg_t));
    st->nsegs--;
}

/* Segments PostgreSQL holds entirely are deleted (after the ack is on disk, so
 * the numbering survives a restart). */
static void trim_acked(sy_journal_t *j, stream_t *st)
{
    if (st->nsegs == 0 || st->segs[0].first + st->segs[0].count - 1 > st->acked || st->segs[0].count == 0)
        return;
    if (save_ack(j, st) != 0)
        return;
    while (st->nsegs > 0 && st->segs[0].count > 0 && st->segs[0].first + st->segs[0].count - 1 <= st->acked)
        remove_seg(j, st, 0);
}

static int new_segment(sy_journal_t *j, stream_t *st)
{
    if (st->nsegs == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        seg_t *n = realloc(st->segs, cap * sizeof(seg_t));
        if (n == NULL)
            return -1;
        st->segs = n;
        st->cap = cap;
    }
    char path[1100];
    seg_path(j, st, st->next, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        note_error(j, "cannot create a segment", strerror(errno));
        return -1;
    }
    fsync(j->dirfd); /* the new name must survive a crash too */
    if (st->fd >= 0)
        close(st->fd);
    st->fd = fd;
    st->segs[st->nsegs++] = (seg_t){.first = st->next, .count = 0, .bytes = 0};
    return 0;
}

/* The bound: windows go first, oldest segment first. */
static bool drop_oldest_windows(sy_journal_t *j)
{
    stream_t *w = &j->st[SY_JOURNAL_WINDOWS];
    if (w->nsegs == 0 || w->segs[0].bytes == 0)
        return false;
    seg_t sg = w->segs[0];
    uint64_t last = sg.first + sg.count - 1;
    uint64_t lost = 0;
    if (sg.count > 0 && last > w->acked)
        lost = last - (w->acked >= sg.first ? w->acked : sg.first - 1);
    remove_seg(j, w, 0);
    if (sg.count > 0 && w->acked < last)
        w->acked = last;
    if (w->read_next <= last)
        w->read_next = last + 1;
    pthread_mutex_lock(&j->mu);
    w->dropped += lost;
    pthread_mutex_unlock(&j->mu);
    sy_warn("journal %s: at its bound (%" PRIu64 " bytes): dropped the oldest %" PRIu64
            " windows rows (numbers %" PRIu64 "..%" PRIu64 ") that PostgreSQL did not have yet",
            j->dir, j->max_bytes, lost, sg.first, last);
    return true;
}

/* Writes one record. Returns true if it was written (it is durable after the
 * next fdatasync). */
static bool write_record(sy_journal_t *j, qrec_t *r)
{
    stream_t *st = &j->st[r->stream];
    uint64_t need = r->len + 1;
    while (j->bytes + need > j->max_bytes && drop_oldest_windows(j))
        ;
    if (j->bytes + need > j->max_bytes) {
        pthread_mutex_lock(&j->mu);
        st->dropped++;
        pthread_mutex_unlock(&j->mu);
        if (r->stream == SY_JOURNAL_EVENTS)
            sy_error("journal %s: full of events PostgreSQL has not taken (%" PRIu64
                     " bytes); this event is NOT journaled, it is only in this log: %.*s",
                     j->dir, j->bytes, (int)r->len, r->data);
        else if (st->bound_warned++ % 100 == 0)
            sy_warn("journal %s: full of events; windows rows are dropped (%" PRIu64 " so far)", j->dir,
                    st->bound_warned);
        return false;
    }
    if (st->fd < 0 || st->nsegs == 0 ||
        (st->segs[st->nsegs - 1].bytes + need > j->seg_max && st->segs[st->nsegs - 1].count > 0))
        if (new_segment(j, st) != 0)
            goto failed;
    r->data[r->len] = '\n';
    if (write_all(st->fd, r->data, r->len + 1) != 0) {
        note_error(j, "cannot append", strerror(errno));
        /* A partial line would poison the segment: start a new one next time. */
        close(st->fd);
        st->fd = -1;
        goto failed;
    }
    seg_t *sg = &st->segs[st->nsegs - 1];
    sg->count++;
    sg->bytes += need;
    j->bytes += need;
    st->next++;
    return true;
failed:
    pthread_mutex_lock(&j->mu);
    st->dropped++;
    pthread_mutex_unlock(&j->mu);
    if (r->stream == SY_JOURNAL_EVENTS)
        sy_error("journal %s: this event is NOT journaled (disk error), it is only in this log: %.*s", j->dir,
                 (int)r->len, r->data);
    return false;
}

/* Scans one segment: counts whole lines and cuts a torn last line. */
static int scan_segment(sy_journal_t *j, stream_t *st, seg_t *sg)
{
    char path[1100];
    seg_path(j, st, sg->first, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[65536];
    uint64_t off = 0, good = 0, lines = 0;
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), (off_t)off)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n') {
                lines++;
                good = off + (uint64_t)i + 1;
            }
        off += (uint64_t)n;
    }
    if (off != good) {
        sy_warn("journal %s: %s ends with a torn line (%" PRIu64 " bytes, from a crash mid-write): cut off", j->dir,
                path, off - good);
        if (ftruncate(fd, (off_t)good) != 0) {
            close(fd);
            return -1;
        }
        fdatasync(fd);
    }
    close(fd);
    sg->count = lines;
    sg->bytes = good;
    return 0;
}

static int cmp_seg(const void *a, const void *b)
{
    uint64_t x = ((const seg_t *)a)->first, y = ((const seg_t *)b)->first;
    return x < y ? -1 : x > y;
}

static int recover(sy_journal_t *j, char *errbuf, size_t errcap)
{
    DIR *d = opendir(j->dir);
    if (d == NULL) {
        snprintf(errbuf, errcap, "cannot open the journal directory %s: %s", j->dir, strerror(errno));
        return -1;
    }
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
        j->st[s].acked = j->st[s].ack_saved = load_ack(j, &j->st[s]);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
            stream_t *st = &j->st[s];
            size_t nl = strlen(st->name);
            if (strncmp(e->d_name, st->name, nl) != 0 || e->d_name[nl] != '.' || strlen(e->d_name + nl + 1) != 20 ||
                strspn(e->d_name + nl + 1, "0123456789") != 20)
                continue;
            if (st->nsegs == st->cap) {
                size_t cap = st->cap ? st->cap * 2 : 16;
                seg_t *n = realloc(st->segs, cap * sizeof(seg_t));
                if (n == NULL) {
                    closedir(d);
                    snprintf(errbuf, errcap, "out of memory");
                    return -1;
                }
                st->segs = n;
                st->cap = cap;
            }
            st->segs[st->nsegs++] = (seg_t){.first = strtoull(e->d_name + nl + 1, NULL, 10)};
        }
    }
    closedir(d);
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        stream_t *st = &j->st[s];
        if (st->nsegs > 1)
            qsort(st->segs, st->nsegs, sizeof(seg_t), cmp_seg);
        uint64_t pending = 0;
        for (size_t k = 0; k < st->nsegs; k++) {
            if (scan_segment(j, st, &st->segs[k]) != 0) {
                snprintf(errbuf, errcap, "cannot read journal segment %s.%020" PRIu64 ": %s", st->name,
                         st->segs[k].first, strerror(errno));
                return -1;
            }
            j->bytes += st->segs[k].bytes;
            uint64_t last = st->segs[k].first + st->segs[k].count - 1;
            uint64_t from = st->segs[k].first > st->acked ? st->segs[k].first : st->acked + 1;
            if (st->segs[k].count > 0 && last >= from)
                pending += last - from + 1;
        }
        st->next = st->acked + 1;
        if (st->nsegs > 0) {
            seg_t *l = &st->segs[st->nsegs - 1];
            if (l->first + l->count > st->next)
                st->next = l->first + l->count;
        }
        /* Empty segments (created, never written) are dropped; so is what PostgreSQL holds. */
        for (size_t k = 0; k < st->nsegs;)
            if (st->segs[k].count == 0)
                remove_seg(j, st, k);
            else
                k++;
        trim_acked(j, st);
        st->read_next = st->acked + 1;
        st->durable = st->next - 1;
        if (pending > 0)
            sy_info("journal %s: %" PRIu64 " %s records from an earlier run wait for PostgreSQL", j->dir, pending,
                    st->name);
    }
    return 0;
}

/* --- reading batches (journal thread) ------------------------------------------ */

static int batch_add(char **out, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 2 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (*len + n + 2 > c)
            c *= 2;
        char *b = realloc(*out, c);
        if (b == NULL)
            return -1;
        *out = b;
        *cap = c;
    }
    memcpy(*out + *len, p, n);
    *len += n;
    return 0;
}

/* Reads the records of segment sg from st->read_next on into the batch (out,
 * olen, cap; got records so far, the first one's number in first). Returns
 * true when the batch is full or cannot go on. */
static bool read_segment(sy_journal_t *j, stream_t *st, seg_t *sg, size_t max_records, size_t max_bytes, char **out,
                         size_t *olen, size_t *cap, size_t *got, uint64_t *first)
{
    uint64_t off = 0, seq = sg->first;
    if (st->cur_valid && st->cur_seg == sg->first && st->cur_seq <= st->read_next) {
        off = st->cur_off;
        seq = st->cur_seq;
    }
    char path[1100];
    seg_path(j, st, sg->first, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        note_error(j, "cannot open a segment to read", strerror(errno));
        return true;
    }
    size_t have = 0;      /* bytes in rbuf, starting at file offset off */
    bool done = false, eof = false;
    while (!done && seq < sg->first + sg->count) {
        char *nl = have ? memchr(j->rbuf, '\n', have) : NULL;
        if (nl == NULL) {
            if (eof || have == j->rcap) {
                note_error(j, "a segment has a line longer than the limit or ends early", path);
                done = true;
                break;
            }
            ssize_t n = pread(fd, j->rbuf + have, j->rcap - have, (off_t)(off + have));
            if (n <= 0)
                eof = true;
            else
                have += (size_t)n;
            continue;
        }
        size_t ll = (size_t)(nl - j->rbuf);
        if (seq >= st->read_next) {
            if (*got > 0 && (*got >= max_records || *olen + ll > max_bytes)) {
                done = true;
                break;
            }
            if (*got == 0)
                *first = seq;
            if ((*got > 0 && batch_add(out, olen, cap, ",", 1) != 0) || batch_add(out, olen, cap, j->rbuf, ll) != 0) {
                done = true;
                break;
            }
            (*got)++;
            st->read_next = seq + 1;
        }
        seq++;
        off += ll + 1;
        memmove(j->rbuf, nl + 1, have - ll - 1);
        have -= ll + 1;
    }
    close(fd);
    st->cur_valid = true;
    st->cur_seg = sg->first;
    st->cur_off = off;
    st->cur_seq = seq;
    return done;
}

/* Reads up to max_records (about max_bytes) from read_next on; returns the
 * number read (0: nothing there or an error, logged). */
static size_t read_batch(sy_journal_t *j, stream_t *st, size_t max_records, size_t max_bytes, char **out,
                         size_t *olen, uint64_t *first)
{
    size_t cap = 0, got = 0;
    *out = NULL;
    *olen = 0;
    if (batch_add(out, olen, &cap, "[", 1) != 0)
        return 0;
    for (size_t k = 0; k < st->nsegs && got < max_records && st->read_next <= st->durable; k++) {
        seg_t *sg = &st->segs[k];
        if (sg->count == 0 || sg->first + sg->count - 1 < st->read_next)
            continue;
        if (st->read_next < sg->first)
            st->read_next = sg->first;
        if (read_segment(j, st, sg, max_records, max_bytes, out, olen, &cap, &got, first))
            break;
    }
    (*out)[(*olen)++] = ']';
    (*out)[*olen] = '\0';
    if (got == 0 && (st->nsegs == 0 || st->segs[st->nsegs - 1].first + st->segs[st->nsegs - 1].count <= st->read_next))
        st->read_next = st->durable + 1; /* nothing left on disk at or after read_next */
    if (got == 0) {
        free(*out);
        *out = NULL;
    }
    return got;
}

/* --- the journal thread --------------------------------------------------------- */

static bool has_work(sy_journal_t *j)
{
    if (j->closing || j->head != NULL)
        return true;
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        stream_t *st = &j->st[s];
        if (st->ack_req > st->acked_pub || st->rewind_req || (st->want && st->ready == NULL && st->durable >= st->read_next))
            return true;
    }
    return false;
}

/* Writes the queued records (list is freed), then one fdatasync per stream
 * written to. Returns how many records were taken. Journal thread, unlocked. */
static uint64_t append_all(sy_journal_t *j, qrec_t *list, uint64_t *fsyncs)
{
    bool touched[SY_JOURNAL_STREAMS] = {false, false};
    uint64_t taken = 0;
    while (list != NULL) {
        qrec_t *r = list;
        list = r->next;
        if (write_record(j, r))
            touched[r->stream] = true;
        free(r);
        taken++;
    }
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
        if (touched[s] && j->st[s].fd >= 0) {
            if (fdatasync(j->st[s].fd) != 0)
                note_error(j, "fdatasync", strerror(errno));
            (*fsyncs)++;
        }
    return taken;
}

/* A batch for the writer when it wants one: true when one is ready to hand
 * out. Called and returns with j->mu held (released while reading). */
static bool prepare_batch(sy_journal_t *j, stream_t *st)
{
    if (!st->want || st->ready != NULL || st->read_next > st->durable)
        return false;
    size_t maxr = st->want_records, maxb = st->want_bytes;
    pthread_mutex_unlock(&j->mu);
    char *out;
    size_t olen;
    uint64_t first = 0;
    size_t got = read_batch(j, st, maxr, maxb, &out, &olen, &first);
    pthread_mutex_lock(&j->mu);
    if (got > 0 && (!st->want || st->rewind_req)) {
        /* rewound while it was read: what it holds is handed out again */
        free(out);
        return false;
    }
    if (got == 0) {
        /* unreadable: wait for the next append or rewind rather than spin */
        if (st->read_next <= st->durable)
            st->want = false;
        return false;
    }
    st->ready = out;
    st->ready_len = olen;
    st->ready_first = first;
    st->ready_last = first + got - 1;
    st->ready_cb = st->want_cb;
    st->ready_ud = st->want_ud;
    st->want = false;
    return true;
}

/* What recover() found, for the control thread's stats. Under the lock once the
 * thread runs. */
static void publish_recovered(sy_journal_t *j)
{
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        stream_t *st = &j->st[s];
        st->next_pub = st->next;
        st->acked_pub = st->ack_req = st->acked;
    }
    j->bytes_pub = j->bytes;
}

/* The directory is locked (flock) by the process that writes it. During a
 * binary upgrade the old process still holds it while it drains: the new one
 * waits here for the lock (appends queue in memory, bounded), then reads what
 * the old one left, and only then writes: two processes never append to the
 * same segment or number records from the same counter. Journal thread. */
static bool take_over(sy_journal_t *j)
{
    for (;;) {
        if (flock(j->dirfd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            sy_error("journal %s: cannot lock the directory: %s; records are not written", j->dir, strerror(errno));
            return false;
        }
        pthread_mutex_lock(&j->mu);
        bool closing = j->closing;
        pthread_mutex_unlock(&j->mu);
        if (closing)
            return false;
        usleep(50 * 1000);
    }
    char err[256];
    if (recover(j, err, sizeof(err)) != 0) {
        sy_error("journal %s: %s; records are not written", j->dir, err);
        return false;
    }
    pthread_mutex_lock(&j->mu);
    publish_recovered(j);
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
        j->st[s].durable = j->st[s].next - 1;
    pthread_mutex_unlock(&j->mu);
    sy_info("journal %s: the previous process let go of it; writing", j->dir);
    return true;
}

static void *journal_main(void *arg)
{
    sy_journal_t *j = arg;
    sy_log_set_thread_name("journal");
    if (j->held_elsewhere && !take_over(j)) {
        pthread_mutex_lock(&j->mu);
        size_t n = 0;
        for (qrec_t *r = j->head; r != NULL; r = r->next)
            n++;
        pthread_mutex_unlock(&j->mu);
        if (n > 0)
            sy_error("journal %s: %zu records queued in memory are lost (the journal was never taken over)", j->dir,
                     n);
        return NULL;
    }
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!has_work(j))
            pthread_cond_wait(&j->cv, &j->mu);
        qrec_t *list = j->head;
        j->head = j->tail = NULL;
        j->queued_bytes = 0;
        bool closing = j->closing;
        uint64_t ack_req[SY_JOURNAL_STREAMS];
        bool rewind[SY_JOURNAL_STREAMS];
        for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
            ack_req[s] = j->st[s].ack_req;
            rewind[s] = j->st[s].rewind_req;
            j->st[s].rewind_req = false;
        }
        pthread_mutex_unlock(&j->mu);

        /* 1. appends, then one fdatasync per stream written to */
        uint64_t fsyncs = 0;
        uint64_t taken = append_all(j, list, &fsyncs);
        /* 2. acknowledgements and rewinds */
        for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
            stream_t *st = &j->st[s];
            if (ack_req[s] > st->acked)
                st->acked = ack_req[s] < st->next ? ack_req[s] : st->next - 1;
            trim_acked(j, st);
            if (rewind[s]) {
                st->read_next = st->acked + 1;
            }
        }
        /* 3. batches for the writer */
        pthread_mutex_lock(&j->mu);
        bool notify = false;
        j->fsyncs += fsyncs;
        j->processed += taken;
        j->bytes_pub = j->bytes;
        for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
            stream_t *st = &j->st[s];
            st->durable = st->next - 1;
            st->next_pub = st->next;
            st->acked_pub = st->acked > ack_req[s] ? st->acked : ack_req[s];
            notify |= prepare_batch(j, st);
        }
        if (closing && j->head == NULL) {
            pthread_mutex_unlock(&j->mu);
            for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
                save_ack(j, &j->st[s]);
            return NULL;
        }
        pthread_mutex_unlock(&j->mu);
        if (notify || taken > 0)
            ev_async_send(j->loop, &j->async);
        pthread_mutex_lock(&j->mu);
    }
}

/* --- the control side -------------------------------------------------------------- */

/* Waiters whose records are all handled (written and fsync'd, or refused). */
static void fire_waiters(sy_journal_t *j, bool all)
{
    pthread_mutex_lock(&j->mu);
    uint64_t done = j->processed;
    pthread_mutex_unlock(&j->mu);
    size_t k = 0;
    while (k < j->nwaiters && (all || j->waiters[k].ticket <= done))
        k++;
    if (k == 0)
        return;
    struct waiter ready[MAX_WAITERS];
    memcpy(ready, j->waiters, k * sizeof(ready[0]));
    memmove(j->waiters, j->waiters + k, (j->nwaiters - k) * sizeof(ready[0]));
    j->nwaiters -= k;
    for (size_t i = 0; i < k; i++) /* a callback may add a waiter: it goes to the end */
        ready[i].cb(ready[i].ud, ready[i].ticket <= done);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    sy_journal_t *j = w->data;
    (void)loop;
    (void)revents;
    fire_waiters(j, false);
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        pthread_mutex_lock(&j->mu);
        stream_t *st = &j->st[s];
        char *json = st->ready;
        size_t len = st->ready_len;
        uint64_t first = st->ready_first, last = st->ready_last;
        sy_journal_batch_fn cb = st->ready_cb;
        void *ud = st->ready_ud;
        st->ready = NULL;
        pthread_mutex_unlock(&j->mu);
        if (json != NULL)
            cb(ud, (sy_jstream_t)s, first, last, json, len);
    }
}

static void free_journal(sy_journal_t *j)
{
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        if (j->st[s].fd >= 0)
            close(j->st[s].fd);
        free(j->st[s].segs);
        free(j->st[s].ready);
    }
    while (j->head != NULL) {
        qrec_t *r = j->head;
        j->head = r->next;
        free(r);
    }
    if (j->dirfd >= 0)
        close(j->dirfd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->rbuf);
    free(j->dir);
    free(j);
}

sy_journal_t *sy_journal_open(struct ev_loop *loop, const char *dir, uint64_t max_bytes, char *errbuf, size_t errcap)
{
    sy_journal_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        snprintf(errbuf, errcap, "out of memory");
        return NULL;
    }
    j->loop = loop;
    j->dirfd = -1;
    j->max_bytes = max_bytes;
    j->seg_max = max_bytes / 8;
    if (j->seg_max < 4096)
        j->seg_max = 4096;
    if (j->seg_max > 16u * 1024 * 1024)
        j->seg_max = 16u * 1024 * 1024;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->st[SY_JOURNAL_EVENTS].name = "events";
    j->st[SY_JOURNAL_WINDOWS].name = "windows";
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
        j->st[s].fd = -1;
    j->dir = strdup(dir);
    j->rcap = SY_JOURNAL_MAX_LINE + READ_CHUNK;
    j->rbuf = malloc(j->rcap);
    if (j->dir == NULL || j->rbuf == NULL) {
        snprintf(errbuf, errcap, "out of memory");
        free_journal(j);
        return NULL;
    }
    /* mkdir -p: parents too */
    char path[1024];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *sl = strchr(path + 1, '/'); sl != NULL; sl = strchr(sl + 1, '/')) {
        *sl = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            break; /* the final mkdir reports it */
        *sl = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(errbuf, errcap, "cannot create the journal directory %s: %s", dir, strerror(errno));
        free_journal(j);
        return NULL;
    }
    j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        snprintf(errbuf, errcap, "cannot open the journal directory %s: %s", dir, strerror(errno));
        free_journal(j);
        return NULL;
    }
    if (flock(j->dirfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) {
            snprintf(errbuf, errcap, "cannot lock the journal directory %s: %s", dir, strerror(errno));
            free_journal(j);
            return NULL;
        }
        j->held_elsewhere = true;
        for (int s = 0; s < SY_JOURNAL_STREAMS; s++)
            j->st[s].next = 1; /* nothing known yet: stats say 0 written until the take-over */
        sy_info("journal %s: held by another process (the one being upgraded?); records wait in memory until it "
                "lets go", dir);
    } else if (recover(j, errbuf, errcap) != 0) {
        free_journal(j);
        return NULL;
    }
    publish_recovered(j);
    ev_async_init(&j->async, async_cb);
    j->async.data = j;
    ev_async_start(loop, &j->async);
    ev_unref(loop); /* the journal alone does not keep the loop running */
    if (pthread_create(&j->thread, NULL, journal_main, j) != 0) {
        snprintf(errbuf, errcap, "cannot start the journal thread");
        ev_ref(loop);
        ev_async_stop(loop, &j->async);
        free_journal(j);
        return NULL;
    }
    j->started = true;
    return j;
}

int sy_journal_append(sy_journal_t *j, sy_jstream_t s, const char *line, size_t len)
{
    if (len == 0 || len > SY_JOURNAL_MAX_LINE || memchr(line, '\n', len) != NULL)
        return SY_EINVAL;
    pthread_mutex_lock(&j->mu);
    if (j->queued_bytes + len > QUEUE_MAX_BYTES) {
        j->st[s].dropped++;
        pthread_mutex_unlock(&j->mu);
        return SY_ELIMIT;
    }
    pthread_mutex_unlock(&j->mu);
    qrec_t *r = malloc(sizeof(*r) + len + 1);
    if (r == NULL)
        return SY_ENOMEM;
    r->next = NULL;
    r->stream = s;
    r->len = len;
    memcpy(r->data, line, len);
    pthread_mutex_lock(&j->mu);
    if (j->tail != NULL)
        j->tail->next = r;
    else
        j->head = r;
    j->tail = r;
    j->queued_bytes += len;
    j->accepted++;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void sy_journal_want(sy_journal_t *j, sy_jstream_t s, size_t max_records, size_t max_bytes, sy_journal_batch_fn cb,
                     void *ud)
{
    pthread_mutex_lock(&j->mu);
    stream_t *st = &j->st[s];
    st->want = true;
    st->want_records = max_records ? max_records : 1;
    st->want_bytes = max_bytes;
    st->want_cb = cb;
    st->want_ud = ud;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void sy_journal_ack(sy_journal_t *j, sy_jstream_t s, uint64_t last)
{
    pthread_mutex_lock(&j->mu);
    if (last > j->st[s].ack_req)
        j->st[s].ack_req = last;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void sy_journal_rewind(sy_journal_t *j, sy_jstream_t s)
{
    pthread_mutex_lock(&j->mu);
    stream_t *st = &j->st[s];
    st->rewind_req = true;
    st->want = false;
    free(st->ready); /* a batch not yet delivered goes too: it is read again */
    st->ready = NULL;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void sy_journal_sync(sy_journal_t *j, sy_journal_sync_fn cb, void *ud)
{
    pthread_mutex_lock(&j->mu);
    uint64_t ticket = j->accepted, done = j->processed;
    pthread_mutex_unlock(&j->mu);
    if (ticket <= done && j->nwaiters == 0) {
        cb(ud, true);
        return;
    }
    if (j->nwaiters == MAX_WAITERS) {
        cb(ud, false);
        return;
    }
    j->waiters[j->nwaiters++] = (struct waiter){.ticket = ticket, .cb = cb, .ud = ud};
}

void sy_journal_stats(sy_journal_t *j, sy_journal_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&j->mu);
    for (int s = 0; s < SY_JOURNAL_STREAMS; s++) {
        out->next[s] = j->st[s].next_pub;
        out->durable[s] = j->st[s].durable;
        out->acked[s] = j->st[s].acked_pub;
        out->dropped[s] = j->st[s].dropped;
    }
    out->bytes = j->bytes_pub;
    out->max_bytes = j->max_bytes;
    out->fsyncs = j->fsyncs;
    out->queued = j->accepted - j->processed;
    snprintf(out->last_error, sizeof(out->last_error), "%s", j->last_error);
    pthread_mutex_unlock(&j->mu);
}

void sy_journal_close(sy_journal_t *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    j->closing = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (j->started)
        pthread_join(j->thread, NULL);
    fire_waiters(j, true); /* the thread wrote everything before it ended */
    ev_ref(j->loop);
    ev_async_stop(j->loop, &j->async);
    free_journal(j);
}
