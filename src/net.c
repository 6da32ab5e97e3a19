/* net: listening sockets (see net.h). */
#include "sluice/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
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

static int open_one(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, sa, len) != 0 || listen(fd, 4096) != 0) {
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

int net_listen(const char *hostport, int *fds, size_t n, char *bound, size_t blen, char *err,
               size_t errlen)
{
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
    for (size_t i = 0; i < n; i++) {
        fds[i] = open_one((struct sockaddr *)&ss, sl);
        if (fds[i] < 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(errno));
            while (i > 0)
                close(fds[--i]);
            return ERR_IO;
        }
        if (i == 0) /* port 0: the others join the port the first one got */
            getsockname(fds[0], (struct sockaddr *)&ss, &sl);
    }
    net_name((struct sockaddr *)&ss, bound, blen);
    return 0;
}
