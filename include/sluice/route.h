/*
 * http: from a request's method and path to what sluice answers (pure;
 * src/core/route.c, prefix http_).
 *
 * Shared by every protocol front end so that h2 and HTTP/1.1 route the
 * same way. Routes:
 *   GET /events/<subject>             one subject, percent-decoded
 *   GET /events?subject=A&subject=B   one or several subjects
 *   optional ?last_event_id=ID        resume position for a first connect;
 *                                     "earliest": everything still stored
 *   optional ?since=RFC3339           first connect: events stored from then on
 *   POST /publish/<subject>           publish the body; ?event=NAME sets Sse-Event,
 *                                     ?end sets Sse-End (the subject's last message)
 *   GET /poll?subject=A&after=ID&timeout=S   long-poll: JSON events after ID
 *   POST /streams/<service-subject>   start a request stream (the body is the request)
 *   GET /streams/r/<token>            read a request stream (Last-Event-ID resumes)
 *   DELETE /streams/r/<token>         cancel it (a notice to its service)
 *   GET /<file>                       a static file (the demo page); "/" is index.html
 * Subjects are validated and de-duplicated in request order; two that
 * overlap ("a.*" and "a.b") are refused, since a message on both would
 * arrive twice.
 */
#ifndef SLUICE_ROUTE_H
#define SLUICE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The hard ceiling; config max-subjects (default 16) is the limit in force. */
#define HTTP_MAX_SUBJECTS 64
#define HTTP_PATH_MAX 4096

enum http_kind {
    HTTP_ERROR,  /* answer status with reason as a text/plain body */
    HTTP_EVENTS, /* open an SSE stream on subjects (none: the grant's default subjects) */
    HTTP_PUBLISH, /* publish the request body on subjects[0] (a literal subject) */
    HTTP_POLL,    /* answer the events after last_event_id as JSON, waiting up to timeout_ms */
    HTTP_FILE,    /* serve file (a safe relative path) from the static directory */
    HTTP_REQUEST, /* start a request stream: the body to service subject subjects[0] */
    HTTP_REPLY,   /* GET a request stream by its token (stream), resumable */
    HTTP_CANCEL,  /* DELETE a request stream by its token: a cancel notice to its service */
    HTTP_DS,      /* the Durable Streams route (ds_route.h): subjects[0] is the data subject */
};

/* "<16 hex owner tag>.<32 hex id>": a request stream's token in /streams/r/<token>. */
#define HTTP_STREAM_TOKEN_LEN 49

struct http_route {
    enum http_kind kind;
    int status;           /* 200 for HTTP_EVENTS */
    char reason[160];     /* one line, no line end; for HTTP_ERROR */
    char *subjects[HTTP_MAX_SUBJECTS]; /* owned; NUL-terminated */
    size_t nsubjects;
    char *last_event_id;  /* owned; NULL when absent */
    int64_t since_ns;     /* HTTP_EVENTS ?since=, ns since 1970; 0 when absent */
    char *event;          /* owned; HTTP_PUBLISH's ?event=, NULL when absent */
    bool end;             /* HTTP_PUBLISH's ?end (any value): the message ends its subject */
    int timeout_ms;       /* HTTP_POLL: 1 to 60 s, default 25 s */
    char *file;           /* owned; HTTP_FILE: relative, no "..", no empty segment */
    char stream[HTTP_STREAM_TOKEN_LEN + 1]; /* HTTP_REPLY, HTTP_CANCEL: the token, checked */
};

/* The content type for a file name, by extension; application/octet-stream otherwise. */
const char *http_content_type(const char *file);

#define HTTP_POLL_TIMEOUT_MS 25000
#define HTTP_POLL_TIMEOUT_MAX_MS 60000

/*
 * Fills route for the request. method and path are not NUL-terminated.
 * Always succeeds: a bad request becomes kind HTTP_ERROR. The caller
 * calls http_route_dispose() afterwards.
 */
void http_route(struct http_route *route, const char *method, size_t mlen,
                const char *path, size_t plen);
void http_route_dispose(struct http_route *route);
/*
 * Turns route into an HTTP_REQUEST to service (a literal subject, checked
 * by the caller): an operator's request-route path matched the request.
 */
void http_route_request(struct http_route *route, const char *service);

/*
 * Parses an RFC 3339 time ("2026-11-24T08:00:00.5Z", "...+01:00"; from
 * 1970 to 2262, what nanoseconds in an int64_t hold) into nanoseconds
 * since 1970. False when malformed or out of that range.
 */
bool http_parse_time(const char *s, size_t n, int64_t *ns);

/* The value of one hex digit (either case), or -1. */
int http_hex_value(char c);
/* Decodes %XX in place over n bytes; returns the new length or -1 if malformed. */
long http_percent_decode(char *s, size_t n);

#endif
