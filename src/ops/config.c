/*
 * config: settings from defaults, an INI file, then flags (see config.h).
 *
 * One table describes every key once: its name (the flag without "--"),
 * its type and where it lands in struct config. The INI handler and the
 * flag parser both call config_set(), so the two sources cannot drift.
 * getopt_long was rejected: its global state makes the parser awkward to
 * test and it cannot share the table.
 */
#include "sluice/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/forwarded.h"
#include "sluice/mem.h"
#include "sluice/subject.h"

enum kind { K_STR, K_INT, K_SIZE, K_LEVEL, K_LIST };

struct key {
    const char *name;
    enum kind kind;
    size_t offset;
    long min, max; /* for K_INT and K_SIZE */
};

/* STR needs a value; OPT may be set to "" (min 1 marks it), which turns it off. */
#define STR(n, f) {n, K_STR, offsetof(struct config, f), 0, 0}
#define OPT(n, f) {n, K_STR, offsetof(struct config, f), 1, 0}
#define INT(n, f, lo, hi) {n, K_INT, offsetof(struct config, f), lo, hi}
#define SIZE(n, f, lo, hi) {n, K_SIZE, offsetof(struct config, f), lo, hi}
static const struct key keys[] = {
    STR("listen", listen),
    STR("listen-plain", listen_plain),
    STR("cert", cert_file),
    STR("key", key_file),
    STR("nats", nats_url),
    STR("admin", admin),
    STR("access-log", access_log),
    INT("drain-ms", drain_ms, 0, 3600000),
    INT("max-connections", max_connections, 1, 10000000),
    INT("max-connections-per-address", max_connections_per_address, 1, 10000000),
    INT("handshake-timeout-ms", handshake_timeout_ms, 100, 600000),
    INT("idle-timeout-ms", idle_timeout_ms, 1000, 86400000),
    INT("stream-rate", stream_rate, 1, 1000000),
    INT("max-requests", max_requests, 1, 2000000000),
    INT("max-header-bytes", max_header_bytes, 1024, 1048576),
    SIZE("max-publish-bytes", max_publish_bytes, 1, 64L << 20),
    STR("www", www),
    STR("auth", auth),
    INT("allow-anonymous", allow_anonymous, 0, 1),
    OPT("jwt-secret-file", jwt_secret_file),
    OPT("jwt-keys", jwt_keys),
    INT("jwt-leeway-s", jwt_leeway_s, 0, 3600),
    OPT("jwt-audience", jwt_audience),
    OPT("jwt-issuer", jwt_issuer),
    STR("auth-cookie", auth_cookie),
    OPT("cors-origins", cors_origins),
    INT("cors-credentials", cors_credentials, 0, 1),
    OPT("allow-subjects", allow_subjects),
    OPT("allowed-hosts", allowed_hosts),
    INT("ipv6-prefix-bits", ipv6_prefix_bits, 8, 128),
    INT("workers", workers, 0, 64),
    INT("max-streams", max_streams, 1, 1 << 20),
    INT("max-subjects", max_subjects, 1, 64),
    INT("max-subjects-per-connection", max_subjects_per_connection, 1, 1 << 24),
    INT("max-subscriptions", max_subscriptions, 0, 1 << 26),
    INT("subscribe-rate", subscribe_rate, 1, 1000000),
    SIZE("max-poll-bytes", max_poll_bytes, 1024, 1L << 30),
    SIZE("file-cache-bytes", file_cache_bytes, 65536, 1L << 34),
    INT("heartbeat-ms", heartbeat_ms, 100, 3600000),
    INT("retry-ms", retry_ms, 100, 3600000),
    INT("retry-jitter-pct", retry_jitter_pct, 0, 100),
    SIZE("stream-queue-bytes", stream_queue_bytes, 1024, 1L << 30),
    SIZE("conn-queue-bytes", conn_queue_bytes, 1024, 1L << 34),
    SIZE("process-queue-bytes", process_queue_bytes, 0, 1L << 40),
    SIZE("worker-inbox-bytes", worker_inbox_bytes, 65536, 1L << 40),
    INT("history-events", history_events, 1, 1000000),
    SIZE("history-bytes", history_bytes, 1024, 1L << 34),
    SIZE("history-total-bytes", history_total_bytes, 0, 1L << 40),
    INT("history-keep-ms", history_keep_ms, 0, 86400000),
    OPT("jetstream-streams", jetstream_streams),
    INT("jetstream-replays", jetstream_replays, 1, 64),
    INT("jetstream-replay-max", jetstream_replay_max, 1, 10000000),
    INT("jetstream-max-consumers", jetstream_max_consumers, 2, 1000000),
    {"log-level", K_LEVEL, offsetof(struct config, log_level), 0, 0},
    INT("reuse-port", reuse_port, 0, 1),
    INT("max-streams-total", max_streams_total, 0, 100000000),
    INT("stream-admission-rate", stream_admission_rate, 0, 10000000),
    INT("overload-retry-min-ms", overload_retry_min_ms, 1000, 3600000),
    INT("overload-retry-max-ms", overload_retry_max_ms, 1000, 3600000),
    /* Repeatable: each one adds an entry; an empty value clears the list. */
    {"request-route", K_LIST, offsetof(struct config, request_routes), 0, 0},
    SIZE("max-request-body-bytes", max_request_body_bytes, 1, 64L << 20),
    STR("request-reply-prefix", request_reply_prefix),
    STR("request-cancel-prefix", request_cancel_prefix),
    INT("request-first-event-ms", request_first_event_ms, 100, 3600000),
    INT("request-cancel-wait-ms", request_cancel_wait_ms, 0, 3600000),
    OPT("request-forward-headers", request_forward_headers),
    OPT("request-secret-file", request_secret_file),
    STR("proxy-protocol", proxy_protocol),
    OPT("trusted-proxies", trusted_proxies),
    INT("max-streams-per-principal", max_streams_per_principal, 0, 100000000),
    INT("principal-stream-rate", principal_stream_rate, 0, 1000000),
    OPT("auth-callout-url", auth_callout_url),
    OPT("auth-callout-subject", auth_callout_subject),
    STR("auth-callout-method", auth_callout_method),
    OPT("auth-callout-headers", auth_callout_headers),
    INT("auth-callout-timeout-ms", auth_callout_timeout_ms, 50, 60000),
    INT("auth-callout-connect-timeout-ms", auth_callout_connect_timeout_ms, 50, 60000),
    INT("auth-callout-max-inflight", auth_callout_max_inflight, 1, 10000),
    INT("auth-callout-max-queue", auth_callout_max_queue, 0, 1000000),
    INT("auth-callout-cache-entries", auth_callout_cache_entries, 0, 10000000),
    INT("auth-callout-cache-ttl-s", auth_callout_cache_ttl_s, 0, 86400),
    INT("auth-callout-negative-ttl-s", auth_callout_negative_ttl_s, 0, 3600),
    OPT("revoke-subject", revoke_subject),
    OPT("ds-base-path", ds_base_path),
    STR("ds-stream", ds_stream),
    STR("ds-subject-prefix", ds_subject_prefix),
    SIZE("ds-max-body-bytes", ds_max_body_bytes, 1, 64L << 20),
    SIZE("ds-max-read-bytes", ds_max_read_bytes, 1024, 64L << 20),
    INT("ds-long-poll-ms", ds_long_poll_ms, 100, 120000),
    INT("ds-timeout-ms", ds_timeout_ms, 100, 60000),
    INT("ds-max-inflight", ds_max_inflight, 1, 100000),
};

static const char USAGE[] =
    "usage: sluice [options]\n"
    "  --config FILE            INI file with the same keys as these flags (flags win)\n"
    "  --listen HOST:PORT       TLS listener, h2 and HTTP/1.1 (default 0.0.0.0:8443)\n"
    "  --listen-plain HOST:PORT cleartext HTTP/1.1 and h2c listener for a TLS-terminating\n"
    "                           load balancer (default off)\n"
    "  --cert FILE              server certificate chain, PEM\n"
    "  --key FILE               server private key, PEM\n"
    "  --nats URL[,URL...]      NATS server, or the nodes of a cluster\n"
    "                           (default nats://127.0.0.1:4222)\n"
    "  --admin HOST:PORT        /metrics, /healthz, /readyz listener, or off\n"
    "                           (default 127.0.0.1:9090)\n"
    "  --access-log DEST        one JSON line per stream: - (stderr), a file, or off\n"
    "                           (default -); SIGUSR1 reopens the file\n"
    "  --drain-ms N             SIGTERM ends streams spread over this window (default 30000)\n"
    "  --workers N              worker threads, 0 = one per core (default 0)\n"
    "  --max-streams N          concurrent streams per connection (default 4096)\n"
    "  --max-subjects N         subjects per stream or poll, 1-64 (default 16)\n"
    "  --max-subjects-per-connection N  subject patterns held by the open streams and\n"
    "                           polls of one connection; beyond, 403 (default 1024)\n"
    "  --max-subscriptions N    distinct subject patterns the process holds, lingering\n"
    "                           ones included; full, the longest-lapsed lingering one\n"
    "                           is evicted; 0 = no cap (default 100000)\n"
    "  --subscribe-rate N       subject patterns new to the process that one connection\n"
    "                           may subscribe per second, burst the same; beyond, 429\n"
    "                           (default 256)\n"
    "  --max-poll-bytes N       JSON bytes of one /poll answer; the rest follows `next`\n"
    "                           (default 1048576)\n"
    "  --file-cache-bytes N     static file bytes each worker shares between responses\n"
    "                           (default 8388608)\n"
    "  --heartbeat-ms N         idle heartbeat comment interval (default 15000)\n"
    "  --retry-ms N             retry: hint sent first on each stream (default 3000)\n"
    "  --retry-jitter-pct N     +- jitter on the retry hint, per stream (default 20)\n"
    "  --stream-queue-bytes N   live bytes one stream may queue before the\n"
    "                           slow-consumer cut (default 262144)\n"
    "  --conn-queue-bytes N     the same for all streams of a connection (default 8388608)\n"
    "  --process-queue-bytes N  the same for the whole process; 0 = a quarter of memory\n"
    "  --worker-inbox-bytes N   NATS events one worker may have waiting; past it, the\n"
    "                           subject's streams end to resume (default 67108864)\n"
    "  --history-events N       events kept per subject for resume (default 1000)\n"
    "  --history-bytes N        bytes kept per subject for resume (default 4194304)\n"
    "  --history-total-bytes N  bytes kept for all subjects; 0 = an eighth of memory\n"
    "  --history-keep-ms N      how long a subject's history outlives its last stream\n"
    "                           (default 60000)\n"
    "  --jetstream-streams LIST JetStream streams to serve subjects from, resume across\n"
    "                           gateways: NAME,NAME or * for all (default: none)\n"
    "  --jetstream-replays N    replays from JetStream run at once (default 4)\n"
    "  --jetstream-replay-max N events one replay may send, else event: reset\n"
    "                           (default 10000)\n"
    "  --jetstream-max-consumers N  JetStream consumers at once, live and replays;\n"
    "                           a new subject past it is refused (default 10000)\n"
    "  --max-connections N      client connections, process-wide (default 100000)\n"
    "  --max-connections-per-address N  per client IP (default 1000)\n"
    "  --handshake-timeout-ms N TLS handshake deadline (default 10000)\n"
    "  --idle-timeout-ms N      close a connection with no stream after (default 300000)\n"
    "  --stream-rate N          new streams per second per connection (default 1000)\n"
    "  --max-requests N         requests per connection before GOAWAY (default 1000000)\n"
    "  --max-header-bytes N     request header list size (default 16384)\n"
    "  --max-publish-bytes N    POST /publish body limit (default 1048576)\n"
    "  --www DIR                static files served at / (the demo page; default www)\n"
    "  --auth MODE              none, jwt or callout (default none)\n"
    "  --allow-anonymous 0|1    allow auth none on a non-loopback listener (default 0)\n"
    "  --jwt-secret-file FILE   HS256/384/512 secret\n"
    "  --jwt-keys LIST          RS256/ES256 public keys: [kid:]FILE,[kid:]FILE\n"
    "  --jwt-leeway-s N         clock skew allowed on exp and nbf (default 30)\n"
    "  --jwt-audience AUD       required aud claim (default: not checked)\n"
    "  --jwt-issuer ISS         required iss claim (default: not checked)\n"
    "  --auth-cookie NAME       cookie that may carry the token (default sluice_token)\n"
    "  --cors-origins LIST      allowed origins: https://app.example,https://*.example.org\n"
    "  --cors-credentials 0|1   allow credentials (cookies) cross-origin (default 0)\n"
    "  --allow-subjects LIST    reserved NATS subjects ($..., _INBOX...) clients may use:\n"
    "                           PATTERN,PATTERN (default: none)\n"
    "  --allowed-hosts LIST     Host names served with auth none and on the admin\n"
    "                           listener, besides localhost and IP literals (default: none)\n"
    "  --ipv6-prefix-bits N     IPv6 clients share a per-address limit per prefix (default 1024)\n"
    "  --log-level LEVEL        debug, info, warn or error (default info)\n"
    "  --reuse-port 0|1         1: share the listen ports with other gateways that also\n"
    "                           say 1 (zero-downtime restarts); 0: refuse to start on a\n"
    "                           port in use (default 0)\n"
    "  --max-streams-total N    SSE streams open process-wide; past it a new stream gets\n"
    "                           200, a long retry: and its end; 0 = no cap (default 250000)\n"
    "  --stream-admission-rate N  new SSE streams per second process-wide, the same\n"
    "                           refusal past it; 0 = no limit (default 0)\n"
    "  --overload-retry-min-ms N, --overload-retry-max-ms N  the retry: such a refusal\n"
    "                           carries, drawn per stream (default 5000 and 30000)\n"
    "  --request-route 'PATH SUBJECT'  POST PATH starts a request stream answered by the\n"
    "                           NATS service on SUBJECT; repeatable (default: none;\n"
    "                           POST /streams/SUBJECT always works)\n"
    "  --max-request-body-bytes N  request stream body limit, else 413 (default 65536)\n"
    "  --request-reply-prefix P reply subjects P.<owner>.<id> (default $SLUICE.reply)\n"
    "  --request-cancel-prefix P  cancel notices on P.<owner>.<id> (default $SLUICE.cancel)\n"
    "  --request-first-event-ms N  no reply within N ms: 504 (default 30000)\n"
    "  --request-cancel-wait-ms N  after DELETE, end the stream with event: error if the\n"
    "                           service has not ended it within N ms (default 5000)\n"
    "  --request-forward-headers LIST  request headers passed to the service (default: none)\n"
    "  --request-secret-file FILE  key binding stream ids to principals; the same on every\n"
    "                           gateway of a fleet (default: none)\n"
    "  --proxy-protocol LIST    listeners whose peers must open with a PROXY protocol\n"
    "                           v1/v2 header naming the client: listen, listen-plain,\n"
    "                           both comma-separated, or off (default off)\n"
    "  --trusted-proxies LIST   CIDRs of proxies whose Forwarded / X-Forwarded-For is\n"
    "                           believed: 10.0.0.0/8,2001:db8::/32 (default: none)\n"
    "  --max-streams-per-principal N  SSE streams open per authenticated principal;\n"
    "                           past it 200 + retry: + end; 0 = no cap (default 0)\n"
    "  --principal-stream-rate N  new SSE streams per second per principal, the same\n"
    "                           refusal past it; 0 = no limit (default 0)\n"
    "  --auth-callout-url URL   auth = callout: the HTTP service asked for each stream,\n"
    "                           publish and poll (README \"Auth callout\")\n"
    "  --auth-callout-subject S or: the NATS subject of the auth service ($…; the\n"
    "                           POST JSON as request, the grant JSON as reply)\n"
    "  --auth-callout-method M  GET (headers only) or POST (also a JSON body) (default GET)\n"
    "  --auth-callout-headers LIST  request headers passed to it\n"
    "                           (default Cookie, Authorization)\n"
    "  --auth-callout-timeout-ms N  whole answer within (default 2000)\n"
    "  --auth-callout-connect-timeout-ms N  connection within (default 500)\n"
    "  --auth-callout-max-inflight N  callouts at once per worker (default 64)\n"
    "  --auth-callout-max-queue N  callouts waiting per worker; beyond, refused\n"
    "                           (default 1024)\n"
    "  --auth-callout-cache-entries N  decisions cached per worker (default 10000)\n"
    "  --auth-callout-cache-ttl-s N  a grant without ttl is cached (default 60)\n"
    "  --auth-callout-negative-ttl-s N  a 401/403 is cached (default 5)\n"
    "  --revoke-subject S       NATS control subject for revocations, under $SLUICE.,\n"
    "                           or empty for none (default $SLUICE.revoke)\n"
    "  --ds-base-path PATH      serve the Durable Streams protocol under PATH, e.g.\n"
    "                           /v1/stream/ (default: off)\n"
    "  --ds-stream NAME         its JetStream stream, made when missing (default DS)\n"
    "  --ds-subject-prefix P    its subjects P.d.<stream>, P.m.<stream>, P.p.<stream>.<producer>\n"
    "                           (default ds)\n"
    "  --ds-max-body-bytes N    one PUT or POST body (default 1048576)\n"
    "  --ds-max-read-bytes N    data in one catch-up or long-poll answer (default 1048576)\n"
    "  --ds-long-poll-ms N      a long poll's wait for data (default 20000)\n"
    "  --ds-timeout-ms N        bound of each JetStream call of the route (default 2000)\n"
    "  --ds-max-inflight N      its operations queued or running at once (default 64)\n"
    "  --help                   this text\n"
    "  --version                print the version\n";

const char *config_usage(void) { return USAGE; }

const char *config_key_name(size_t i)
{
    return i < sizeof(keys) / sizeof(keys[0]) ? keys[i].name : NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void config_init(struct config *c)
{
    memset(c, 0, sizeof(*c));
    c->listen = mem_strdup("0.0.0.0:8443");
    c->listen_plain = mem_strdup("off");
    c->nats_url = mem_strdup("nats://127.0.0.1:4222");
    c->admin = mem_strdup("127.0.0.1:9090");
    c->access_log = mem_strdup("-");
    c->drain_ms = 30000;
    c->max_connections = 100000;
    c->max_connections_per_address = 1000;
    c->handshake_timeout_ms = 10000;
    c->idle_timeout_ms = 300000;
    c->stream_rate = 1000;
    c->max_requests = 1000000;
    c->max_header_bytes = 16384;
    c->max_publish_bytes = 1024 * 1024;
    c->www = mem_strdup("www");
    c->auth = mem_strdup("none");
    c->jwt_secret_file = mem_strdup("");
    c->jwt_keys = mem_strdup("");
    c->jwt_leeway_s = 30;
    c->jwt_audience = mem_strdup("");
    c->jwt_issuer = mem_strdup("");
    c->auth_cookie = mem_strdup("sluice_token");
    c->cors_origins = mem_strdup("");
    c->allow_subjects = mem_strdup("");
    c->allowed_hosts = mem_strdup("");
    c->ipv6_prefix_bits = 64;
    c->max_streams = 4096;
    c->max_subjects = 16;
    c->max_subjects_per_connection = 1024;
    c->max_subscriptions = 100000;
    c->subscribe_rate = 256;
    c->max_poll_bytes = 1024 * 1024;
    c->file_cache_bytes = 8 * 1024 * 1024;
    c->heartbeat_ms = 15000;
    c->retry_ms = 3000;
    c->retry_jitter_pct = 20;
    c->stream_queue_bytes = 256 * 1024;
    c->conn_queue_bytes = 8 * 1024 * 1024;
    c->worker_inbox_bytes = 64 * 1024 * 1024;
    c->history_events = 1000;
    c->history_bytes = 4 * 1024 * 1024;
    c->history_keep_ms = 60000;
    c->jetstream_streams = mem_strdup("");
    c->jetstream_replays = 4;
    c->jetstream_replay_max = 10000;
    c->jetstream_max_consumers = 10000;
    c->log_level = LOG_INFO;
    c->max_streams_total = 250000;
    c->overload_retry_min_ms = 5000;
    c->overload_retry_max_ms = 30000;
    c->request_routes = mem_strdup("");
    c->max_request_body_bytes = 64 * 1024;
    c->request_reply_prefix = mem_strdup("$SLUICE.reply");
    c->request_cancel_prefix = mem_strdup("$SLUICE.cancel");
    c->request_first_event_ms = 30000;
    c->request_cancel_wait_ms = 5000;
    c->request_forward_headers = mem_strdup("");
    c->request_secret_file = mem_strdup("");
    c->proxy_protocol = mem_strdup("off");
    c->trusted_proxies = mem_strdup("");
    c->auth_callout_url = mem_strdup("");
    c->auth_callout_subject = mem_strdup("");
    c->auth_callout_method = mem_strdup("GET");
    c->auth_callout_headers = mem_strdup("Cookie, Authorization");
    c->auth_callout_timeout_ms = 2000;
    c->auth_callout_connect_timeout_ms = 500;
    c->auth_callout_max_inflight = 64;
    c->auth_callout_max_queue = 1024;
    c->auth_callout_cache_entries = 10000;
    c->auth_callout_cache_ttl_s = 60;
    c->auth_callout_negative_ttl_s = 5;
    c->revoke_subject = mem_strdup("$SLUICE.revoke");
    c->ds_base_path = mem_strdup("");
    c->ds_stream = mem_strdup("DS");
    c->ds_subject_prefix = mem_strdup("ds");
    c->ds_max_body_bytes = 1024 * 1024;
    c->ds_max_read_bytes = 1024 * 1024;
    c->ds_long_poll_ms = 20000;
    c->ds_timeout_ms = 2000;
    c->ds_max_inflight = 1024;
}

void config_dispose(struct config *c)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (keys[i].kind == K_STR || keys[i].kind == K_LIST) {
            char **p = (char **)(void *)((char *)c + keys[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen)
{
    const struct key *k = find_key(name);
    if (!k) {
        set_err(err, errlen, "unknown setting '%s'", name);
        return ERR_INVALID;
    }
    void *field = (char *)c + k->offset;
    switch (k->kind) {
    case K_STR:
        if (!*value && k->min == 0) {
            set_err(err, errlen, "'%s' needs a value", name);
            return ERR_INVALID;
        }
        free(*(char **)field);
        *(char **)field = mem_strdup(value);
        return 0;
    case K_LIST: {
        char **list = (char **)field;
        size_t have = strlen(*list), n = strlen(value);
        if (!n || !have) {
            free(*list);
            *list = mem_strdup(value);
            return 0;
        }
        *list = mem_realloc(*list, have + n + 2);
        (*list)[have] = ',';
        memcpy(*list + have + 1, value, n + 1);
        return 0;
    }
    case K_LEVEL:
        if (log_level_parse(value, field) != 0) {
            set_err(err, errlen, "'%s' must be debug, info, warn or error, not '%s'", name, value);
            return ERR_INVALID;
        }
        return 0;
    case K_INT:
    case K_SIZE: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < k->min || v > k->max) {
            set_err(err, errlen, "'%s' must be a whole number from %ld to %ld, not '%s'", name,
                    k->min, k->max, value);
            return ERR_INVALID;
        }
        if (k->kind == K_INT)
            *(int *)field = (int)v;
        else
            *(size_t *)field = (size_t)v;
        return 0;
    }
    }
    return ERR_INVALID;
}

struct ini_ctx {
    struct config *c;
    char err[256]; /* the first error's reason; ini_parse_file() returns its line */
    bool failed;
};

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ctx = user;
    char why[sizeof(ctx->err)];
    if (*section && strcmp(section, "sluice") != 0)
        snprintf(why, sizeof(why), "unknown section [%s]", section);
    else if (config_set(ctx->c, name, value, why, sizeof(why)) == 0)
        return 1;
    if (!ctx->failed)
        memcpy(ctx->err, why, sizeof(why));
    ctx->failed = true;
    return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return ERR_IO;
    }
    struct ini_ctx ctx = {.c = c, .err = "syntax error"};
    int line = ini_parse_file(f, on_ini_entry, &ctx);
    fclose(f);
    if (line == 0)
        return 0;
    set_err(err, errlen, "%s:%d: %s", path, line, ctx.err);
    return ERR_INVALID;
}

/* Splits "--name=value" or "--name value"; returns the index of the next argument or -1. */
static int flag_value(int argc, char **argv, int i, char *name, size_t nlen, const char **value)
{
    const char *arg = argv[i] + 2;
    const char *eq = strchr(arg, '=');
    if (eq) {
        snprintf(name, nlen, "%.*s", (int)(eq - arg), arg);
        *value = eq + 1;
        return i + 1;
    }
    snprintf(name, nlen, "%s", arg);
    if (i + 1 >= argc)
        return -1;
    *value = argv[i + 1];
    return i + 2;
}

int config_parse_args(struct config *c, int argc, char **argv, enum config_action *action,
                      char *err, size_t errlen)
{
    *action = CONFIG_RUN;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *action = CONFIG_HELP;
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            *action = CONFIG_VERSION;
            return 0;
        }
    }
    /* The file first, wherever --config stands, so that every flag overrides it. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 1; i < argc;) {
            if (strncmp(argv[i], "--", 2) != 0 || !argv[i][2]) {
                set_err(err, errlen, "unexpected argument '%s' (see --help)", argv[i]);
                return ERR_INVALID;
            }
            char name[64];
            const char *value = NULL;
            int next = flag_value(argc, argv, i, name, sizeof(name), &value);
            if (strcmp(name, "config") != 0 && !find_key(name)) {
                set_err(err, errlen, "unknown option '--%s' (see --help)", name);
                return ERR_INVALID;
            }
            if (next < 0) {
                set_err(err, errlen, "--%s needs a value", name);
                return ERR_INVALID;
            }
            bool is_config = strcmp(name, "config") == 0;
            if (pass == 0 && is_config) {
                int rc = config_load(c, value, err, errlen);
                if (rc)
                    return rc;
            } else if (pass == 1 && !is_config) {
                char why[256];
                if (config_set(c, name, value, why, sizeof(why)) != 0) {
                    set_err(err, errlen, "--%s: %s", name, why);
                    return ERR_INVALID;
                }
            }
            i = next;
        }
    }
    return 0;
}

int config_check(const struct config *c, char *err, size_t errlen)
{
    if (strcmp(c->auth, "none") != 0 && strcmp(c->auth, "jwt") != 0 &&
        strcmp(c->auth, "callout") != 0) {
        set_err(err, errlen, "auth must be none, jwt or callout, not '%s'", c->auth);
        return ERR_INVALID;
    }
    if ((strcmp(c->auth, "callout") == 0) !=
        ((*c->auth_callout_url != '\0') != (*c->auth_callout_subject != '\0'))) {
        set_err(err, errlen, "auth = callout needs exactly one of auth-callout-url and "
                             "auth-callout-subject, and neither goes without it");
        return ERR_INVALID;
    }
    /*
     * The question carries clients' cookies: only a reserved subject is kept from
     * clients' wildcards and publishes (and allow-subjects must not open it).
     */
    if (*c->auth_callout_subject &&
        (!subject_valid(c->auth_callout_subject, strlen(c->auth_callout_subject), false, NULL) ||
         !subject_reserved(c->auth_callout_subject) ||
         subject_allowed(c->allow_subjects, c->auth_callout_subject))) {
        set_err(err, errlen, "auth-callout-subject '%s' must be a literal reserved subject "
                             "($…) that allow-subjects does not open to clients",
                c->auth_callout_subject);
        return ERR_INVALID;
    }
    if (*c->auth_callout_url && strncmp(c->auth_callout_url, "http://", 7) != 0 &&
        strncmp(c->auth_callout_url, "https://", 8) != 0) {
        set_err(err, errlen, "auth-callout-url must be an http:// or https:// URL");
        return ERR_INVALID;
    }
    if (strcmp(c->auth_callout_method, "GET") != 0 && strcmp(c->auth_callout_method, "POST") != 0) {
        set_err(err, errlen, "auth-callout-method must be GET or POST, not '%s'",
                c->auth_callout_method);
        return ERR_INVALID;
    }
    /* Clients can neither publish nor subscribe there: only the reserved prefix keeps it so. */
    if (*c->revoke_subject &&
        (strncmp(c->revoke_subject, "$SLUICE.", 8) != 0 ||
         !subject_valid(c->revoke_subject, strlen(c->revoke_subject), false, NULL) ||
         subject_allowed(c->allow_subjects, c->revoke_subject))) {
        set_err(err, errlen, "revoke-subject '%s' must be a literal subject under $SLUICE. "
                             "that allow-subjects does not open to clients", c->revoke_subject);
        return ERR_INVALID;
    }
    if (!c->cert_file || !c->key_file) {
        set_err(err, errlen, "a certificate and key are required (--cert FILE --key FILE)");
        return ERR_INVALID;
    }
    const char *colon = strrchr(c->listen, ':');
    if (!colon || colon == c->listen || !colon[1]) {
        set_err(err, errlen, "listen address '%s' is not HOST:PORT", c->listen);
        return ERR_INVALID;
    }
    const char *why = NULL;
    if (!subject_allow_list_valid(c->allow_subjects, &why)) {
        set_err(err, errlen, "allow-subjects '%s': %s", c->allow_subjects, why);
        return ERR_INVALID;
    }
    /* Else one stream of max-subjects new patterns could never be admitted. */
    if (c->max_subjects_per_connection < c->max_subjects || c->subscribe_rate < c->max_subjects) {
        set_err(err, errlen, "max-subjects-per-connection and subscribe-rate must be at least "
                             "max-subjects (%d)", c->max_subjects);
        return ERR_INVALID;
    }
    bool tls_proxied, plain_proxied;
    if (config_proxy_protocol(c, &tls_proxied, &plain_proxied) != 0) {
        set_err(err, errlen, "proxy-protocol must be off, or listen and/or listen-plain "
                             "comma-separated, not '%s'", c->proxy_protocol);
        return ERR_INVALID;
    }
    if (plain_proxied && strcmp(c->listen_plain, "off") == 0) {
        set_err(err, errlen, "proxy-protocol names listen-plain, which is off");
        return ERR_INVALID;
    }
    struct forwarded_nets *nets;
    char why2[200];
    if (forwarded_nets_parse(c->trusted_proxies, &nets, why2, sizeof(why2)) != 0) {
        set_err(err, errlen, "trusted-proxies: %s", why2);
        return ERR_INVALID;
    }
    forwarded_nets_free(nets);
    if (c->overload_retry_min_ms > c->overload_retry_max_ms) {
        set_err(err, errlen, "overload-retry-min-ms (%d) is above overload-retry-max-ms (%d)",
                c->overload_retry_min_ms, c->overload_retry_max_ms);
        return ERR_INVALID;
    }
    size_t bl = strlen(c->ds_base_path);
    if (bl && (bl < 2 || c->ds_base_path[0] != '/' || c->ds_base_path[bl - 1] != '/' ||
               strpbrk(c->ds_base_path, "?#%"))) {
        set_err(err, errlen, "ds-base-path '%s' must start and end with '/', without ? # %%",
                c->ds_base_path);
        return ERR_INVALID;
    }
    /* The prefix is a literal start of subjects: never a wildcard, never NATS's own space. */
    if (!subject_valid(c->ds_subject_prefix, strlen(c->ds_subject_prefix), false, &why) ||
        subject_reserved(c->ds_subject_prefix) || strlen(c->ds_subject_prefix) > 64) {
        set_err(err, errlen, "ds-subject-prefix '%s': not a plain subject of at most 64 bytes",
                c->ds_subject_prefix);
        return ERR_INVALID;
    }
    if (bl && strcspn(c->ds_stream, " .*>") != strlen(c->ds_stream)) {
        set_err(err, errlen, "ds-stream '%s' is not a JetStream stream name", c->ds_stream);
        return ERR_INVALID;
    }
    return 0;
}

int config_proxy_protocol(const struct config *c, bool *tls, bool *plain)
{
    *tls = *plain = false;
    const char *p = c->proxy_protocol;
    if (strcmp(p, "off") == 0)
        return 0;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        while (n && *e == ' ') {
            e++;
            n--;
        }
        while (n && e[n - 1] == ' ')
            n--;
        if (n == 6 && strncmp(e, "listen", 6) == 0)
            *tls = true;
        else if (n == 12 && strncmp(e, "listen-plain", 12) == 0)
            *plain = true;
        else
            return ERR_INVALID; /* an empty entry too: "listen," is a typo, not a list */
        p += strcspn(p, ",");
        if (!*p)
            break;
        p++;
    }
    return *tls || *plain ? 0 : ERR_INVALID;
}
