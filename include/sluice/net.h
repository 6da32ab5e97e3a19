/*
 * net: listening sockets and peer names.
 */
#ifndef SLUICE_NET_H
#define SLUICE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * Opens n non-blocking listeners on "host:port" or "[v6]:port", sharing
 * the port among themselves (SO_REUSEPORT when n > 1). Port 0 binds the
 * first to a free port and the others to that same port. bound gets the
 * address actually bound.
 *
 * share false: the port must be free; another process listening there,
 * or starting to, makes this fail. *lock_fd gets the lock that keeps it
 * ours (-1 when none is needed): close it when the listeners close. With
 * lock_fd NULL and n > 1 nothing stops another sluice joining later.
 * share true: join gateways that also share it (--reuse-port 1); *lock_fd
 * is -1.
 *
 * 0, or ERR_INVALID / ERR_IO with a one-line reason in err (nothing left
 * open).
 */
int net_listen(const char *hostport, int *fds, size_t n, bool share, int *lock_fd, char *bound,
               size_t blen, char *err, size_t errlen);
/* "ip:port" ("[ip]:port" for IPv6) of sa into out. */
void net_name(const struct sockaddr *sa, char *out, size_t len);
/* The IP of sa alone into out. */
void net_ip(const struct sockaddr *sa, char *out, size_t len);

#endif
