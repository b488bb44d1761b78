#include "proxy/handoff.h"

#include "proxy/log.h"
#include "proxy/net.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 64

struct sy_handoff {
    struct ev_loop *loop;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd;                /* the listening unix socket */
    ev_io accept_io;
    int peer;              /* the new process being handed the sockets, or -1 */
    ev_io peer_io;
    void (*ready)(void *, int);
    void *arg;
};

void sy_handoff_default_path(const char *first_listen, char *out, size_t size)
{
    snprintf(out, size, "@switchyard-upgrade:%s", first_listen ? first_listen : "-");
}

static int unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof(sun->sun_path))
        return SY_EINVAL;
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@')
        sun->sun_path[0] = '\0'; /* abstract: no file, gone with the process */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
}

static void peer_close(sy_handoff_t *h)
{
    if (h->peer < 0)
        return;
    ev_io_stop(h->loop, &h->peer_io);
    close(h->peer);
    h->peer = -1;
}

static void stop_serving(sy_handoff_t *h)
{
    if (h->fd < 0)
        return;
    ev_io_stop(h->loop, &h->accept_io);
    close(h->fd);
    h->fd = -1;
    if (h->path[0] != '@')
        unlink(h->path);
}

static void peer_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_handoff_t *h = io->data;
    char buf[64];
    (void)loop;
    (void)revents;
    ssize_t n = recv(h->peer, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    int pid = 0;
    if (n > 0) {
        buf[n] = '\0';
        if (sscanf(buf, "READY %d", &pid) != 1)
            pid = 0;
    }
    if (pid <= 0) {
        sy_warn("upgrade: the new process went away before it was serving; this one keeps serving");
        peer_close(h);
        return;
    }
    /* Release the name before answering, so the new process can serve it next. */
    stop_serving(h);
    static const char bye[] = "DRAINING\n";
    if (send(h->peer, bye, sizeof(bye) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        sy_debug("upgrade: answering the new process: %s", strerror(errno));
    peer_close(h);
    sy_info("upgrade: process %d serves the listening sockets now; draining", pid);
    h->ready(h->arg, pid);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_handoff_t *h = io->data;
    (void)revents;
    int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || (cred.uid != geteuid() && cred.uid != 0)) {
        sy_warn("upgrade: refused a hand-off to a process of another user");
        close(fd);
        return;
    }
    int fds[MAX_FDS];
    size_t nfds = sy_net_listeners(fds, MAX_FDS);
    char head[64];
    int hl = snprintf(head, sizeof(head), "SYHO1 %zu %d\n", nfds, (int)getpid());
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec iov = {.iov_base = head, .iov_len = (size_t)hl};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        m.msg_control = ctl.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    /* A fresh socket's buffer takes these few bytes at once. */
    if (sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) != hl) {
        sy_warn("upgrade: sending the listening sockets: %s", strerror(errno));
        close(fd);
        return;
    }
    /* One new process at a time; a later one replaces an earlier that hangs. */
    peer_close(h);
    h->peer = fd;
    ev_io_init(&h->peer_io, peer_cb, fd, EV_READ);
    h->peer_io.data = h;
    ev_io_start(loop, &h->peer_io);
    sy_info("upgrade: handed %zu listening sockets to pid %d; serving until it is ready", nfds, (int)cred.pid);
}

sy_handoff_t *sy_handoff_serve(struct ev_loop *loop, const char *path, void (*ready)(void *arg, int pid), void *arg)
{
    struct sockaddr_un sun;
    socklen_t len;
    if (unix_addr(path, &sun, &len) != 0) {
        sy_error("upgrade_socket '%s': empty or too long", path);
        return NULL;
    }
    sy_handoff_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->peer = -1;
    h->ready = ready;
    h->arg = arg;
    snprintf(h->path, sizeof(h->path), "%s", path);
    h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->fd >= 0 && path[0] != '@') {
        /* A file left by a process that died: nobody answers on it. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, len) != 0 && errno == ECONNREFUSED)
            unlink(path);
        if (probe >= 0)
            close(probe);
    }
    mode_t old = umask(0177); /* the file: owner only */
    int rc = h->fd < 0 ? -1 : bind(h->fd, (struct sockaddr *)&sun, len);
    umask(old);
    if (rc != 0 || listen(h->fd, 4) != 0) {
        sy_error("upgrade socket %s: %s (is another gateway serving it? set upgrade_socket)", path,
                 strerror(errno));
        if (h->fd >= 0)
            close(h->fd);
        free(h);
        return NULL;
    }
    ev_io_init(&h->accept_io, accept_cb, h->fd, EV_READ);
    h->accept_io.data = h;
    ev_io_start(loop, &h->accept_io);
    return h;
}

void sy_handoff_destroy(sy_handoff_t *h)
{
    if (h == NULL)
        return;
    peer_close(h);
    stop_serving(h);
    free(h);
}

/* Waits for fd to be readable, up to the deadline (start-up only). */
static bool wait_readable(int fd, struct timespec deadline)
{
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (long)(deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
        if (ms <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)ms);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

static struct timespec deadline_in(double s)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)s;
    t.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

int sy_handoff_take(const char *path, double timeout_s)
{
    struct sockaddr_un sun;
    socklen_t len;
    if (unix_addr(path, &sun, &len) != 0) {
        sy_error("takeover: upgrade socket '%s': empty or too long", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, len) != 0) {
        sy_error("takeover: cannot reach the running gateway on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char head[64];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = head, .iov_len = sizeof(head) - 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    ssize_t n = -1;
    if (wait_readable(fd, deadline_in(timeout_s)))
        n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    size_t want = 0;
    int old_pid = 0;
    if (n > 0) {
        head[n] = '\0';
        if (sscanf(head, "SYHO1 %zu %d", &want, &old_pid) != 2)
            n = -1;
    }
    /* Every descriptor received is ours to close, whatever else went wrong. */
    size_t got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); n >= 0 && c != NULL; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int lfd;
            memcpy(&lfd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (sy_net_inherit(lfd) == 0)
                got++;
        }
    }
    if (n <= 0 || (m.msg_flags & MSG_CTRUNC) || got != want) {
        sy_error("takeover: no valid answer from the running gateway on %s (received %zu of %zu sockets)", path, got,
                 want);
        sy_net_inherit_close_unused();
        close(fd);
        return -1;
    }
    sy_info("takeover: received %zu listening sockets from pid %d", got, old_pid);
    return fd;
}

int sy_handoff_ready(int fd, double timeout_s)
{
    char msg[32], ans[32];
    int l = snprintf(msg, sizeof(msg), "READY %d\n", (int)getpid());
    ssize_t n = -1;
    if (send(fd, msg, (size_t)l, MSG_NOSIGNAL) == l && wait_readable(fd, deadline_in(timeout_s)))
        n = recv(fd, ans, sizeof(ans) - 1, MSG_DONTWAIT);
    close(fd);
    if (n <= 0 || strncmp(ans, "DRAINING", 8) != 0) {
        sy_warn("takeover: the old process did not confirm its drain; stop it by hand (SIGQUIT)");
        return -1;
    }
    return 0;
}

void sy_handoff_notify_ready(int ready_fd)
{
    if (ready_fd >= 0) {
        char msg[32];
        int l = snprintf(msg, sizeof(msg), "ready %d\n", (int)getpid());
        if (write(ready_fd, msg, (size_t)l) != l)
            sy_warn("--ready-fd %d: %s", ready_fd, strerror(errno));
        close(ready_fd);
    }
    const char *ns = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    socklen_t len;
    if (ns == NULL || unix_addr(ns, &sun, &len) != 0)
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    static const char ready[] = "READY=1";
    if (fd >= 0) {
        if (sendto(fd, ready, sizeof(ready) - 1, MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
            sy_debug("NOTIFY_SOCKET: %s", strerror(errno));
        close(fd);
    }
}
