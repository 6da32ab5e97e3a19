/*
 * net: listening sockets (see net.h).
 *
 * Port sharing is explicit. Workers need SO_REUSEPORT to each have their
 * own listener on one port, but SO_REUSEPORT also lets any other process
 * of the same user join that port, and the kernel then splits new
 * connections between the two without a word. So an exclusive group:
 *
 *   1. takes a lock named after the address: an abstract UNIX socket
 *      "@sluice-listen:<ip>:<port>" (bound by one process at a time,
 *      gone the moment the process dies, never a stale file);
 *   2. probes the port with a socket WITHOUT SO_REUSEPORT: its bind fails
 *      when anything listens there, a sluice of any version included;
 *   3. closes the probe and binds its n sockets with SO_REUSEPORT.
 *
 * The lock is held while the listeners are open, so a gateway with
 * --reuse-port 1 (which takes the same lock just for its own binds) finds
 * it and refuses instead of joining. A single exclusive socket binds
 * without SO_REUSEPORT at all: the kernel itself then refuses joiners.
 * Rejected: one listening socket shared by every worker (kernel-exclusive,
 * but every worker wakes for every connection, and the kernel's even
 * hash spread over workers is lost), and a lock file (stale after a
 * crash, and its directory is one more thing to configure). A process
 * that binds with SO_REUSEPORT without asking (not a sluice) between
 * steps 2 and 3 still can join; that window is a few system calls long.
 */
#include "sluice/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sluice/err.h"

/* Splits "host:port" or "[v6]:port"; returns false when malformed. */
static bool split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1])
        return false;
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    strcpy(port, colon + 1);
    return true;
}

/* A bound socket (listening unless probe); -1 with errno. */
static int open_one(const struct sockaddr *sa, socklen_t len, bool reuseport, bool probe)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* SO_REUSEADDR: sockets in TIME_WAIT from a previous run do not block a restart. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, sa, len) != 0 || (!probe && listen(fd, 4096) != 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void net_name(const struct sockaddr *sa, char *out, size_t len)
{
    char addr[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
        snprintf(out, len, "[%s]:%d", addr, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
        snprintf(out, len, "%s:%d", addr, ntohs(s4->sin_port));
    } else {
        snprintf(out, len, "unix");
    }
}

void net_ip(const struct sockaddr *sa, char *out, size_t len)
{
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)len);
    else
        snprintf(out, len, "unix");
}

/* Binds the abstract-socket lock for the address in sa; the fd, or -1 with errno. */
static int take_lock(const struct sockaddr *sa)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    char name[80];
    net_name(sa, name, sizeof(name));
    int n = snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "sluice-listen:%s", name);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&un,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/*
 * A sharing group takes the lock only for its binds; another sharing
 * gateway starting at the same moment holds it for microseconds, so a
 * short wait tells "busy" from "held exclusively".
 */
static int take_lock_waiting(const struct sockaddr *sa)
{
    for (int i = 0; i < 50; i++) {
        int fd = take_lock(sa);
        if (fd >= 0 || errno != EADDRINUSE)
            return fd;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    errno = EADDRINUSE;
    return -1;
}

static bool port_zero(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return ((const struct sockaddr_in6 *)(const void *)sa)->sin6_port == 0;
    return ((const struct sockaddr_in *)(const void *)sa)->sin_port == 0;
}

int net_listen(const char *hostport, int *fds, size_t n, bool share, int *lock_fd, char *bound,
               size_t blen, char *err, size_t errlen)
{
    if (lock_fd)
        *lock_fd = -1;
    char host[256], port[16];
    if (!split_hostport(hostport, host, sizeof(host), port, sizeof(port))) {
        snprintf(err, errlen, "address '%s' is not HOST:PORT", hostport);
        return ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(rc));
        return ERR_INVALID;
    }
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    struct sockaddr *sa = (struct sockaddr *)&ss;
    /* One exclusive socket needs no SO_REUSEPORT, and then no lock: the kernel refuses joiners. */
    bool reuseport = share || n > 1;
    bool locked = reuseport && lock_fd;
    int lock = -1;
    if (locked && !port_zero(sa)) {
        lock = share ? take_lock_waiting(sa) : take_lock(sa);
        if (lock < 0) {
            if (errno == EADDRINUSE)
                snprintf(err, errlen, "%s: Address already in use by another sluice%s", hostport,
                         share ? " that does not share it (start both with --reuse-port 1)"
                               : " (start both with --reuse-port 1 to share it)");
            else
                snprintf(err, errlen, "cannot lock %s: %s", hostport, strerror(errno));
            return ERR_IO;
        }
        int probe = share ? -1 : open_one(sa, sl, false, true);
        if (!share && probe < 0) {
            int e = errno;
            close(lock);
            if (e == EADDRINUSE)
                snprintf(err, errlen,
                         "%s: Address already in use by another process (two "
                         "sluice gateways share a port only with --reuse-port 1 on both)",
                         hostport);
            else
                snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(e));
            return ERR_IO;
        }
        if (probe >= 0)
            close(probe);
    }
    for (size_t i = 0; i < n; i++) {
        fds[i] = open_one(sa, sl, reuseport, false);
        if (fds[i] < 0) {
            int e = errno;
            if (e == EADDRINUSE)
                snprintf(err, errlen, "%s: Address already in use by another process%s", hostport,
                         share ? " that does not share it (--reuse-port 1 joins "
                                 "only gateways that also say 1)"
                               : " (two sluice gateways share a port only with "
                                 "--reuse-port 1 on both)");
            else
                snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(e));
            while (i > 0)
                close(fds[--i]);
            if (lock >= 0)
                close(lock);
            return ERR_IO;
        }
        if (i == 0 && port_zero(sa)) {
            /* Port 0: the others join the port the first one got; lock that one. */
            getsockname(fds[0], sa, &sl);
            if (locked && (lock = take_lock(sa)) < 0) {
                snprintf(err, errlen, "cannot lock %s: %s", hostport, strerror(errno));
                close(fds[0]);
                return ERR_IO;
            }
        }
    }
    if (lock >= 0 && share) {
        close(lock); /* a sharing group's lock only covered its binds */
        lock = -1;
    }
    if (lock_fd)
        *lock_fd = lock;
    else if (lock >= 0)
        close(lock);
    net_name(sa, bound, blen);
    return 0;
}
