/*
 * ds_route: the Durable Streams protocol route (src/proto/ds.c), served
 * inside the one request pipeline (request.c): request.c routes a path
 * under ds-base-path here, applies Host, CORS, auth (the stream's data
 * subject: subscribe to read, publish to write) and the body limit, then
 * calls these. Every answer leaves through request_answer(), so the
 * access log, x-request-id and CORS are the pipeline's.
 */
#ifndef SLUICE_DS_ROUTE_H
#define SLUICE_DS_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

struct request;
struct http_route;
struct config;

/* Whether path (the request target, query included) is under cfg's ds-base-path. */
bool ds_route_match(const struct config *cfg, const char *path);
/*
 * Routes a matching request: HTTP_DS with subjects[0] the stream's data
 * subject, or HTTP_ERROR (400 for a path that cannot name a stream).
 */
void ds_route(const struct config *cfg, struct http_route *route, const char *path);
/* Keeps a protocol header of r (see ds_header()); false for other names. */
bool ds_request_header(struct request *r, const char *name, size_t nlen, const char *value,
                       size_t vlen);
/* Serves GET, HEAD and DELETE (PUT and POST: ds_write once the body is complete). */
int ds_serve(struct request *r);
/* Serves PUT and POST with r->body complete. */
int ds_write(struct request *r);
/*
 * r's long poll or SSE stream woke, or its job's answer came (request_resume).
 * 0 or what the front end returned.
 */
int ds_resume(struct request *r);
/* Whether r waits for its job: still running, or its answer here (ds_job_done). */
bool ds_job_waiting(const struct request *r);
/*
 * A job of the route (bus_ds_submit) came back to its worker as
 * BUS_MAIL_DS: wakes its request (an SSE reader whose head went: queues
 * the events its job read), or frees it when the request has gone.
 */
void ds_job_done(void *job);
/*
 * r's stream woke after its head went: an SSE reader on a notifier starts
 * a job reading what is new (or ends its stream when no job slot is
 * free). Never answers.
 */
void ds_wake(struct request *r);
/* Frees what r holds for the route. */
void ds_request_dispose(struct request *r);

#endif
