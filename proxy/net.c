#include "proxy/net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sy_addr_parse(const char *text, sy_addr_t *out, const char **why)
{
    char host[128];
    const char *port;
    memset(out, 0, sizeof(*out));
    if (text == NULL || *text == '\0') {
        *why = "empty address";
        return SY_EINVAL;
    }
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host)) {
            *why = "expected [ipv6]:port";
            return SY_EINVAL;
        }
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
            *why = "expected host:port";
            return SY_EINVAL;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port = colon + 1;
    }
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 0 || p > 65535) {
        *why = "bad port (0..65535)";
        return SY_EINVAL;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p);
        out->len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p);
        out->len = sizeof(*s6);
        return 0;
    }
    *why = "not a numeric IP address (names are not resolved)";
    return SY_EINVAL;
}

void sy_addr_format_ip(const struct sockaddr *sa, char *buf, size_t size)
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)size);
    else
        snprintf(buf, size, "unknown");
}

void sy_addr_format(const sy_addr_t *a, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    sy_addr_format_ip(sa, ip, sizeof(ip));
    if (sa->sa_family == AF_INET6)
        snprintf(buf, size, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else
        snprintf(buf, size, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
}

/* Listening sockets of this process (control thread only, a handful): the ones
 * received from an older process and not yet claimed, and the ones in use, which
 * a newer process may ask for. */
#define MAX_LISTENERS 64
typedef struct held {
    sy_addr_t addr;
    int fd;
} held_t;
static held_t inherited[MAX_LISTENERS], listening[MAX_LISTENERS];
static size_t ninherited, nlistening;

static bool addr_equal(const sy_addr_t *a, const sy_addr_t *b)
{
    const struct sockaddr *x = (const struct sockaddr *)&a->ss, *y = (const struct sockaddr *)&b->ss;
    if (x->sa_family != y->sa_family)
        return false;
    if (x->sa_family == AF_INET) {
        const struct sockaddr_in *p = (const void *)x, *q = (const void *)y;
        return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
    }
    if (x->sa_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const void *)x, *q = (const void *)y;
        return p->sin6_port == q->sin6_port && memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(p->sin6_addr)) == 0;
    }
    return false;
}

int sy_net_inherit(int fd)
{
    sy_addr_t a = {.len = sizeof(a.ss)};
    int type = 0, acc = 0;
    socklen_t tl = sizeof(type), al = sizeof(acc);
    if (getsockname(fd, (struct sockaddr *)&a.ss, &a.len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) != 0 || !acc || ninherited == MAX_LISTENERS) {
        close(fd);
        return SY_EINVAL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        close(fd);
        return SY_EIO;
    }
    inherited[ninherited++] = (held_t){.addr = a, .fd = fd};
    return 0;
}

void sy_net_inherit_close_unused(void)
{
    for (size_t i = 0; i < ninherited; i++)
        close(inherited[i].fd);
    ninherited = 0;
}

static int take_inherited(const sy_addr_t *a)
{
    for (size_t i = 0; i < ninherited; i++)
        if (addr_equal(&inherited[i].addr, a)) {
            int fd = inherited[i].fd;
            inherited[i] = inherited[--ninherited];
            return fd;
        }
    return -1;
}

int sy_net_listen(const sy_addr_t *a, int backlog)
{
    if (nlistening == MAX_LISTENERS)
        return -EMFILE;
    int fd = take_inherited(a);
    if (fd < 0) {
        fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        /* SO_REUSEADDR only lets a restart bind past TIME_WAIT; without SO_REUSEPORT
         * the kernel refuses a second listener on the address, so a second gateway
         * fails here instead of taking half the traffic. */
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(fd, backlog) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    listening[nlistening++] = (held_t){.addr = *a, .fd = fd};
    return fd;
}

void sy_net_close_listener(int fd)
{
    for (size_t i = 0; i < nlistening; i++)
        if (listening[i].fd == fd) {
            listening[i] = listening[--nlistening];
            break;
        }
    close(fd);
}

size_t sy_net_listeners(int *fds, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nlistening && n < max; i++)
        fds[n++] = listening[i].fd;
    return n;
}

/* The inode of the socket listening on `a`, from /proc/net/tcp{,6}; 0 if none. */
static unsigned long listen_inode(const sy_addr_t *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    bool v6 = sa->sa_family == AF_INET6;
    unsigned port = ntohs(v6 ? ((const struct sockaddr_in6 *)sa)->sin6_port : ((const struct sockaddr_in *)sa)->sin_port);
    char want[33];
    if (v6) {
        const uint32_t *w = (const uint32_t *)(const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        snprintf(want, sizeof(want), "%08X%08X%08X%08X", w[0], w[1], w[2], w[3]);
    } else {
        snprintf(want, sizeof(want), "%08X", ((const struct sockaddr_in *)sa)->sin_addr.s_addr);
    }
    const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (size_t f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char line[512];
        if (fp == NULL)
            continue;
        while (fgets(line, sizeof(line), fp) != NULL) {
            char local[64];
            unsigned lport, st;
            unsigned long inode;
            if (sscanf(line, " %*d: %63[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*d %*d %lu", local, &lport, &st, &inode) != 4)
                continue;
            /* 0A is LISTEN; a wildcard listener also holds every address of its family. */
            bool any = strspn(local, "0") == strlen(local);
            bool same_family = (f == 1) == v6;
            if (st == 0x0A && lport == port && (any || (same_family && strcmp(local, want) == 0))) {
                fclose(fp);
                return inode;
            }
        }
        fclose(fp);
    }
    return 0;
}

void sy_net_listen_error(const sy_addr_t *a, int err, char *buf, size_t size)
{
    char text[64];
    sy_addr_format(a, text, sizeof(text));
    int n = snprintf(buf, size, "cannot listen on %s: %s", text, strerror(err));
    if (err != EADDRINUSE || n < 0 || (size_t)n >= size)
        return;
    unsigned long inode = listen_inode(a);
    char who[160] = "another process";
    if (inode != 0) {
        /* Which process has that socket open (only those we may look at). */
        char sock[64];
        snprintf(sock, sizeof(sock), "socket:[%lu]", inode);
        DIR *proc = opendir("/proc");
        struct dirent *pe;
        bool found = false;
        while (proc != NULL && !found && (pe = readdir(proc)) != NULL) {
            if (pe->d_name[0] < '1' || pe->d_name[0] > '9')
                continue;
            char path[320], link[64], pid[16];
            if (strlen(pe->d_name) >= sizeof(pid))
                continue;
            memcpy(pid, pe->d_name, strlen(pe->d_name) + 1);
            snprintf(path, sizeof(path), "/proc/%s/fd", pid);
            DIR *fds = opendir(path);
            struct dirent *fe;
            while (fds != NULL && !found && (fe = readdir(fds)) != NULL) {
                if (strlen(fe->d_name) > 16)
                    continue;
                snprintf(path, sizeof(path), "/proc/%s/fd/%.16s", pid, fe->d_name);
                ssize_t l = readlink(path, link, sizeof(link) - 1);
                if (l <= 0)
                    continue;
                link[l] = '\0';
                if (strcmp(link, sock) != 0)
                    continue;
                char comm[64] = "?";
                snprintf(path, sizeof(path), "/proc/%s/comm", pid);
                FILE *cf = fopen(path, "r");
                if (cf != NULL) {
                    if (fgets(comm, sizeof(comm), cf) != NULL)
                        comm[strcspn(comm, "\n")] = '\0';
                    fclose(cf);
                }
                snprintf(who, sizeof(who), "pid %s (%.63s)", pid, comm);
                found = true;
            }
            if (fds != NULL)
                closedir(fds);
        }
        if (proc != NULL)
            closedir(proc);
    }
    snprintf(buf + n, size - (size_t)n, " (held by %s; is another gateway running with this address?)", who);
}

int sy_net_connect(const sy_addr_t *a)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    sy_net_nodelay(fd);
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

void sy_net_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
