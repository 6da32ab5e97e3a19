/*
 * cl_net: the client programs' TCP connects: non-blocking, close-on-exec,
 * Nagle off (SSE frames are small and latency is what is measured), the
 * connect started and finished on the loop's first writable event.
 */
#ifndef SLUICE_CL_NET_H
#define SLUICE_CL_NET_H

#include <netdb.h>

/* Resolves host and port (TCP, any family) into *ai, which the caller
 * frees with freeaddrinfo(): NULL, or the resolver's message (*ai NULL). */
const char *cl_net_resolve(const char *host, const char *port, struct addrinfo **ai);
/* A socket connecting to ai: the fd, or -1 with errno set (the socket is
 * then closed). EINPROGRESS is not a failure. */
int cl_net_connect(const struct addrinfo *ai);
/* Once the socket is writable: 0 if the connect succeeded, else its errno. */
int cl_net_connect_result(int fd);

#endif
