/*
 * cl_h2: the nghttp2 client session glue the client programs share: a
 * session with their SETTINGS, output pulled from nghttp2 into the
 * connection's pending buffer, and the few header helpers.
 *
 * Output flows nghttp2_session_mem_send -> the caller's cl_buf (up to a
 * soft limit, so one connection cannot pile up megabytes) -> one
 * SSL_write of the whole buffer, retried as is after WANT_WRITE (see
 * cl_tls.h); nothing more is pulled until the buffer has gone. Input is
 * the caller's: nghttp2_session_mem_recv on what it read.
 *
 * Rejected alternative: nghttp2's send/recv callbacks writing to the
 * socket. They would write a record per frame; the pull gathers a loop
 * iteration's frames into large TLS records.
 */
#ifndef SLUICE_CL_H2_H
#define SLUICE_CL_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "cl_buf.h"

struct cl_conn;

struct cl_h2_settings {
    uint32_t window_size;    /* SETTINGS_INITIAL_WINDOW_SIZE, bytes */
    uint32_t conn_window;    /* connection receive window, bytes; 0: the default 65535 */
    bool manual_window;      /* no automatic WINDOW_UPDATE: the caller consumes */
    bool wait_peer_settings; /* submit no request before the server's SETTINGS */
};

/* The session callbacks the programs set; any may be NULL. */
struct cl_h2_handlers {
    nghttp2_on_header_callback on_header;
    nghttp2_on_frame_recv_callback on_frame_recv;
    nghttp2_on_data_chunk_recv_callback on_data_chunk_recv;
    nghttp2_on_stream_close_callback on_stream_close;
    nghttp2_on_frame_not_send_callback on_frame_not_send;
};

/*
 * A client session calling h's handlers with user_data, its SETTINGS
 * (push off, the window) and connection window queued. 0, or an nghttp2
 * error code (the session is then not created). The session keeps its
 * own copy of the callbacks: h may go after the call.
 */
int cl_h2_session_new(nghttp2_session **session, const struct cl_h2_handlers *h,
                      void *user_data, const struct cl_h2_settings *s);
/* Appends what nghttp2 has to send to out until out holds soft_max bytes
 * or nghttp2 has nothing. 0, or an nghttp2 error code. */
int cl_h2_pull(nghttp2_session *session, struct cl_buf *out, size_t soft_max);
/*
 * Writes what c has pending and what the session s has to send (s may be
 * NULL: c's output only, as for HTTP/1.1) until the socket is full or
 * nothing is left: frames are pulled, up to soft_max bytes at a time, only
 * once c's output has gone (cl_conn.h's write rule). Then c watches for
 * reading, and for writing while output waits or a read wants the socket
 * writable. Does nothing unless c is OPEN. NULL, or why the connection
 * failed (an nghttp2 or TLS error): the caller takes it down.
 */
const char *cl_h2_flush(nghttp2_session *s, struct cl_conn *c, size_t soft_max);
/* The :status value as a number (first three digits; 0 when none). */
int cl_h2_status(const uint8_t *value, size_t len);
/* Whether header name (len bytes) is want. */
bool cl_h2_name_is(const uint8_t *name, size_t len, const char *want);
/* Extra request headers (--header): entries with owned names (lowercase) and values. */
struct cl_h2_headers {
    nghttp2_nv *nv; /* n entries */
    size_t n;
    size_t max; /* at most this many; 0: no bound */
};

/* A CL_OPT_CALL (cl_opt.h) for a struct cl_h2_headers: adds "Name: value";
 * false when it has no name or max is reached. */
bool cl_h2_headers_add(void *headers, const char *value);
/* Frees the entries; h is empty afterwards. */
void cl_h2_headers_dispose(struct cl_h2_headers *h);
/* A header entry pointing at NUL-terminated name and value (borrowed). */
nghttp2_nv cl_h2_nv(const char *name, const char *value);
/* The same with a value of vlen bytes. */
nghttp2_nv cl_h2_nv_len(const char *name, const char *value, size_t vlen);

/* A request body sent from memory: data is borrowed; off <= len is what
 * nghttp2 has taken so far. */
struct cl_h2_body {
    const char *data;
    size_t len, off;
};
/* A data provider that sends b to its end, then END_STREAM; b must live
 * until the request is closed. Sets b->off to 0. */
nghttp2_data_provider cl_h2_body_provider(struct cl_h2_body *b);

#endif
