/*
 * access: the access log — one JSON line per request when it ends.
 *
 * One destination for the process (stderr, a file, or nothing), written
 * with one write(2) per line from any worker thread, so lines never
 * interleave. access_reopen() (on SIGUSR1) swaps in a freshly opened file
 * with dup2(), atomically for the writers: log rotation moves the file
 * away, then signals.
 */
#ifndef SLUICE_ACCESS_H
#define SLUICE_ACCESS_H

#include <stddef.h>
#include <stdint.h>

struct access_entry {
    const char *request_id;
    const char *traceparent;  /* NULL when absent */
    const char *client;       /* "ip:port", or the ip a trusted proxy's header named */
    const char *via;          /* the proxy's "ip:port" when client came through one; or NULL */
    const char *protocol;     /* "h2", "http/1.1" */
    const char *method;
    const char *path;
    char *const *subjects;    /* may be NULL */
    size_t nsubjects;
    int status;
    double duration_s;
    uint64_t events;
    uint64_t bytes;
    const char *reason;       /* why it ended: "client", "slow_consumer", … or "complete" */
    const char *stream;       /* a request stream's "<tag>.<id>", or NULL */
};

/* "-" for stderr, "off" for none, else a file opened for append. 0 or ERR_IO. */
int access_open(const char *dest, char *err, size_t errlen);
/* Reopens the file (a no-op for stderr or off). 0 or ERR_IO; the old file stays on failure. */
int access_reopen(void);
/* Writes one line. Thread-safe. */
void access_write(const struct access_entry *e);
/* Closes the file. */
void access_close(void);

#endif
