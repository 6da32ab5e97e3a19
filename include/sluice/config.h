/*
 * config: every setting, its default, the INI file and the command line.
 *
 * One table of keys serves both sources: a key in the file is the long
 * flag without its dashes, so `--heartbeat-ms 500` and `heartbeat-ms = 500`
 * are the same setting. Flags override the file. Errors are one line,
 * with file:line for the file.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/log.h"

struct config {
    char *listen;        /* "host:port" */
    char *listen_plain;  /* cleartext HTTP/1.1 + h2c listener, or "off" */
    char *cert_file;
    char *key_file;
    char *nats_url;
    int workers;         /* threads; 0 means one per core */
    int max_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS per connection */
    int max_subjects;    /* subjects per stream or poll */
    int max_subjects_per_connection; /* patterns held by one connection's open streams */
    int max_subscriptions;     /* distinct patterns per process, lingering included; 0 = no cap */
    int subscribe_rate;        /* patterns new to the process, per second per connection */
    size_t max_poll_bytes;     /* JSON bytes of one poll answer (one event always fits) */
    size_t file_cache_bytes;   /* static file bytes shared per worker */
    int heartbeat_ms;    /* idle comment interval */
    int retry_ms;        /* `retry:` hint */
    int retry_jitter_pct;/* +- percent applied per stream */
    size_t stream_queue_bytes; /* per-stream live queue cap */
    size_t conn_queue_bytes;   /* all streams of a connection */
    size_t process_queue_bytes;/* all streams of the process; 0 = from memory size */
    size_t worker_inbox_bytes; /* NATS events waiting for one worker's loop */
    int history_events;        /* per subscription */
    size_t history_bytes;      /* per subscription */
    size_t history_total_bytes;/* all subscriptions; 0 = from memory size */
    int history_keep_ms;       /* history kept after a subject's last stream closes */
    char *jetstream_streams;   /* "NAME,NAME", "*", or "" for none */
    int jetstream_replays;     /* replay jobs at once */
    int jetstream_replay_max;  /* events per replay */
    int jetstream_max_consumers; /* JetStream consumers at once, live and replays */
    enum log_level log_level;
    char *admin;         /* admin listener host:port, or "off" */
    int drain_ms;        /* SIGTERM: streams are ended over this window */
    char *access_log;    /* "-" = stderr, "off", or a file path */
    int max_connections;             /* process-wide */
    int max_connections_per_address; /* per client IP, process-wide */
    int handshake_timeout_ms;        /* TLS handshake must finish within */
    int idle_timeout_ms;             /* a connection with no stream is closed after */
    int stream_rate;                 /* new streams per second per connection */
    int max_requests;                /* requests per connection, then GOAWAY */
    int max_header_bytes;            /* request header list, HPACK-decoded */
    size_t max_publish_bytes;        /* POST /publish body */
    char *www;                       /* static files (the demo page) */
    char *auth;                      /* "none" or "jwt" */
    int allow_anonymous;             /* auth none on a non-loopback listener: 1 to allow */
    char *jwt_secret_file;           /* HS256/384/512 secret, or "" */
    char *jwt_keys;                  /* "[kid:]file,[kid:]file" public keys, or "" */
    int jwt_leeway_s;
    char *jwt_audience;              /* "" for no check */
    char *jwt_issuer;                /* "" for no check */
    char *auth_cookie;               /* cookie name holding the token */
    char *cors_origins;              /* comma-separated origin patterns, or "" */
    int cors_credentials;            /* 1: access-control-allow-credentials */
    char *allow_subjects;            /* reserved subject patterns clients may use, or "" */
    char *allowed_hosts;             /* Host names besides localhost and IP literals, or "" */
    int ipv6_prefix_bits;            /* IPv6 clients are counted per this prefix */
    int reuse_port;                  /* 1: listen ports may be shared with other gateways */
    int max_streams_total;           /* SSE streams open process-wide; 0 = no cap */
    int stream_admission_rate;       /* new SSE streams per second process-wide; 0 = none */
    int overload_retry_min_ms;       /* `retry:` of a stream refused for capacity: */
    int overload_retry_max_ms;       /*   drawn from [min, max] */
    char *request_routes;            /* request-route entries "PATH SUBJECT", joined by ',' */
    size_t max_request_body_bytes;   /* POST body of a request stream */
    char *request_reply_prefix;      /* reply subjects: <prefix>.<owner tag>.<id> */
    char *request_cancel_prefix;     /* cancel notices: <prefix>.<owner tag>.<id> */
    int request_first_event_ms;      /* no first reply within: 504 */
    int request_cancel_wait_ms;      /* after DELETE, the service has this long to end */
    char *request_forward_headers;   /* request headers passed to the service, or "" */
    char *request_secret_file;       /* key binding stream ids to principals, or "" */
    char *proxy_protocol;            /* listeners that take a PROXY header: "off", "listen",
                                        "listen-plain" or both, comma-separated */
    char *trusted_proxies;           /* CIDRs whose Forwarded / X-Forwarded-For is believed */
    int max_streams_per_principal;   /* SSE streams open per principal; 0 = no cap */
    int principal_stream_rate;       /* new SSE streams per second per principal; 0 = none */
    /* auth = callout (callout.h) and revocation (revoke.h) */
    char *auth_callout_url;          /* the auth service, or "" */
    char *auth_callout_subject;      /* or its NATS subject, or "" */
    char *auth_callout_method;       /* "GET" or "POST" */
    char *auth_callout_headers;      /* request headers passed to it, comma-separated */
    int auth_callout_timeout_ms;     /* whole transfer */
    int auth_callout_connect_timeout_ms;
    int auth_callout_max_inflight;   /* transfers at once, per worker */
    int auth_callout_max_queue;      /* questions waiting for one, per worker */
    int auth_callout_cache_entries;  /* decisions kept, per worker; 0: none */
    int auth_callout_cache_ttl_s;    /* a grant without "ttl" is kept */
    int auth_callout_negative_ttl_s; /* a 401/403 is kept */
    char *revoke_subject;            /* NATS control subject ($SLUICE.…), or "" for none */
    /* The Durable Streams route (src/proto/ds.c); off while ds_base_path is "". */
    char *ds_base_path;              /* e.g. "/v1/stream/": starts and ends with '/' */
    char *ds_stream;                 /* the JetStream stream behind it (made when missing) */
    char *ds_subject_prefix;         /* its subjects: <prefix>.d.<path token> and so on */
    size_t ds_max_body_bytes;        /* one PUT or POST body */
    size_t ds_max_read_bytes;        /* data in one catch-up or long-poll answer */
    int ds_long_poll_ms;             /* how long a long poll waits for data */
    int ds_timeout_ms;               /* bound of each JetStream call the route makes */
    int ds_max_inflight;             /* its operations queued or running per process (503 past) */
};

enum config_action { CONFIG_RUN, CONFIG_HELP, CONFIG_VERSION };

void config_init(struct config *c);
void config_dispose(struct config *c);
/* 0, or ERR_INVALID with a reason in err (unknown key or bad value). */
int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen);
/* 0, ERR_IO (unreadable) or ERR_INVALID; err holds "path:line: reason". */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
/*
 * Reads --config FILE first, then applies every other flag over it.
 * 0 with *action set, or ERR_INVALID / ERR_IO with err set.
 */
int config_parse_args(struct config *c, int argc, char **argv, enum config_action *action,
                      char *err, size_t errlen);
/* Checks values that only make sense together; 0 or ERR_INVALID with err. */
int config_check(const struct config *c, char *err, size_t errlen);
/*
 * Which listeners proxy-protocol marks: *tls for listen, *plain for
 * listen-plain. 0, or ERR_INVALID for a value that is not off or a list
 * of those two names.
 */
int config_proxy_protocol(const struct config *c, bool *tls, bool *plain);
/* The --help text. */
const char *config_usage(void);
/*
 * The name of the i-th setting (a config key, and its flag without "--"),
 * or NULL past the last: the man page and README tests start from these.
 */
const char *config_key_name(size_t i);

#endif
