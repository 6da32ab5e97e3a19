/*
 * server: start-up and shutdown order (see server.h).
 *
 * Every worker binds its own SO_REUSEPORT socket to the listen address,
 * so the kernel spreads connections over workers without a shared accept
 * lock. Port 0 binds the first socket to a free port and the others to
 * that same port; the start-up line names it.
 *
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait(), so no handler ever runs inside a worker.
 */
#include "sluice/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice/bus.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/tls.h"
#include "sluice/worker.h"

/* Splits "host:port" or "[v6]:port"; returns false when malformed. */
static bool split_hostport(const char *listen, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return false;
    const char *h = listen;
    size_t n = (size_t)(colon - listen);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    strcpy(port, colon + 1);
    return true;
}

static int open_listener(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, sa, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Opens n listeners on cfg->listen into fds; 0 or -1 with the error logged. */
static int open_listeners(const char *listen, int *fds, size_t n, char *bound, size_t blen)
{
    char host[256], port[16];
    if (!split_hostport(listen, host, sizeof(host), port, sizeof(port))) {
        log_error("listen address '%s' is not HOST:PORT", listen);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        log_error("cannot resolve listen address '%s': %s", listen, gai_strerror(rc));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    for (size_t i = 0; i < n; i++) {
        fds[i] = open_listener((struct sockaddr *)&ss, sl);
        if (fds[i] < 0) {
            log_error("cannot listen on %s: %s", listen, strerror(errno));
            while (i > 0)
                close(fds[--i]);
            return -1;
        }
        if (i == 0) /* port 0: the others join the port the first one got */
            getsockname(fds[0], (struct sockaddr *)&ss, &sl);
    }
    char addr[INET6_ADDRSTRLEN];
    int p = 0;
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof(addr));
        p = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(bound, blen, "[%s]:%d", addr, p);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof(addr));
        p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(bound, blen, "%s:%d", addr, p);
    }
    return 0;
}

/* Waits for a stop signal, sweeping lingering subscriptions once a second meanwhile. */
static int wait_for_stop(struct bus *bus)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
        struct timespec second = {1, 0};
        int sig = sigtimedwait(&set, NULL, &second);
        if (sig < 0) {
            bus_sweep(bus);
            continue;
        }
        if (sig == SIGHUP) {
            log_info("SIGHUP: live reload is not supported yet; ignored");
            continue;
        }
        return sig;
    }
}

int server_run(const struct config *cfg)
{
    int code = 1;
    size_t nworkers = cfg->workers > 0 ? (size_t)cfg->workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (nworkers < 1)
        nworkers = 1;
    struct worker **workers = mem_calloc(nworkers, sizeof(*workers));
    int *fds = mem_calloc(nworkers, sizeof(*fds));
    struct bus *bus = NULL;
    char err[512], bound[300];

    /* Blocked before any thread exists, so every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    SSL_CTX *ssl_ctx = tls_ctx_new(cfg->cert_file, cfg->key_file, err, sizeof(err));
    if (!ssl_ctx) {
        log_error("%s", err);
        goto out;
    }
    if (open_listeners(cfg->listen, fds, nworkers, bound, sizeof(bound)) != 0)
        goto out_ctx;
    size_t memory = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    size_t queue_total = cfg->process_queue_bytes ? cfg->process_queue_bytes : memory / 4;
    for (size_t i = 0; i < nworkers; i++)
        workers[i] = worker_new(i, cfg, ssl_ctx, fds[i], queue_total / nworkers);
    struct bus_params bp = {
        .url = cfg->nats_url,
        .nworkers = nworkers,
        .deliver = worker_post,
        .worker_ctxs = (void *const *)workers,
        .history_events = (size_t)cfg->history_events,
        .history_bytes = cfg->history_bytes,
        .history_total_bytes = cfg->history_total_bytes ? cfg->history_total_bytes : memory / 8,
        .keep_ms = cfg->history_keep_ms,
    };
    if (bus_new(&bus, &bp, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out_workers;
    }
    for (size_t i = 0; i < nworkers; i++) {
        if (worker_start(workers[i], bus) != 0)
            goto out_stop;
    }
    log_info("sluice %s listening on https://%s (h2), %zu workers, nats %s, max-streams %d, "
             "heartbeat %d ms",
             SLUICE_VERSION, bound, nworkers, cfg->nats_url, cfg->max_streams, cfg->heartbeat_ms);

    int sig = wait_for_stop(bus);
    log_info("%s: shutting down", strsignal(sig));
    code = 0;
out_stop:
    for (size_t i = 0; i < nworkers; i++)
        worker_stop(workers[i]);
    bus_free(bus);
out_workers:
    for (size_t i = 0; i < nworkers; i++)
        worker_free(workers[i]);
out_ctx:
    SSL_CTX_free(ssl_ctx);
out:
    free(workers);
    free(fds);
    return code;
}
