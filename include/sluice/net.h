/*
 * net: listening sockets and peer names.
 */
#ifndef SLUICE_NET_H
#define SLUICE_NET_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * Opens n non-blocking SO_REUSEPORT listeners on "host:port" or
 * "[v6]:port". Port 0 binds the first to a free port and the others to
 * that same port. bound gets the address actually bound. 0, or ERR_INVALID
 * / ERR_IO with a one-line reason in err (nothing left open).
 */
int net_listen(const char *hostport, int *fds, size_t n, char *bound, size_t blen, char *err,
               size_t errlen);
/* "ip:port" ("[ip]:port" for IPv6) of sa into out. */
void net_name(const struct sockaddr *sa, char *out, size_t len);
/* The IP of sa alone into out. */
void net_ip(const struct sockaddr *sa, char *out, size_t len);

#endif
