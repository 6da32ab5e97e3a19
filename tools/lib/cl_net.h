/*
 * cl_net: the client programs' TCP connects: non-blocking, close-on-exec,
 * Nagle off (SSE frames are small and latency is what is measured), the
 * connect started and finished on the loop's first writable event.
 */
#ifndef SLUICE_CL_NET_H
#define SLUICE_CL_NET_H

#include <netdb.h>

/* A socket connecting to ai: the fd, or -1 with errno set (the socket is
 * then closed). EINPROGRESS is not a failure. */
int cl_net_connect(const struct addrinfo *ai);
/* Once the socket is writable: 0 if the connect succeeded, else its errno. */
int cl_net_connect_result(int fd);

#endif
