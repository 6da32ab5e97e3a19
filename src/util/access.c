/* access: JSON-lines access log (see access.h). */
#include "sluice/access.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sluice/buf.h"
#include "sluice/err.h"
#include "sluice/json.h"
#include "sluice/mem.h"

static atomic_int out_fd = -1; /* -1: off */
static char *path;             /* NULL unless a file */

int access_open(const char *dest, char *err, size_t errlen)
{
    if (strcmp(dest, "off") == 0)
        return 0;
    if (strcmp(dest, "-") == 0) {
        atomic_store(&out_fd, STDERR_FILENO);
        return 0;
    }
    int fd = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open access log %s: %s", dest, strerror(errno));
        return ERR_IO;
    }
    path = mem_strdup(dest);
    atomic_store(&out_fd, fd);
    return 0;
}

int access_reopen(void)
{
    if (!path)
        return 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return ERR_IO;
    /* dup2 replaces the descriptor writers use in one step; none sees it closed. */
    dup2(fd, atomic_load(&out_fd));
    close(fd);
    return 0;
}

void access_close(void)
{
    int fd = atomic_exchange(&out_fd, -1);
    if (path && fd >= 0)
        close(fd);
    free(path);
    path = NULL;
}

static void field(struct buf *b, const char *name, const char *value)
{
    char k[40];
    int n = snprintf(k, sizeof(k), ",\"%s\":", name);
    buf_append(b, k, (size_t)n);
    json_put_string(b, value ? value : "", value ? strlen(value) : 0);
}

void access_write(const struct access_entry *e)
{
    int fd = atomic_load(&out_fd);
    if (fd < 0)
        return;
    struct buf b;
    buf_init(&b);
    char num[160];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(num, sizeof(num), "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(num + n, sizeof(num) - (size_t)n, ".%03ldZ\"", ts.tv_nsec / 1000000L);
    buf_append(&b, num, (size_t)n);
    field(&b, "request_id", e->request_id);
    if (e->traceparent)
        field(&b, "traceparent", e->traceparent);
    field(&b, "client", e->client);
    if (e->via)
        field(&b, "via", e->via);
    field(&b, "protocol", e->protocol);
    field(&b, "method", e->method);
    field(&b, "path", e->path);
    if (e->nsubjects) {
        buf_append(&b, ",\"subjects\":[", 13);
        for (size_t i = 0; i < e->nsubjects; i++) {
            if (i)
                buf_append(&b, ",", 1);
            json_put_string(&b, e->subjects[i], strlen(e->subjects[i]));
        }
        buf_append(&b, "]", 1);
    }
    n = snprintf(num, sizeof(num),
                 ",\"status\":%d,\"duration_s\":%.3f,\"events\":%llu,\"bytes\":%llu", e->status,
                 e->duration_s, (unsigned long long)e->events, (unsigned long long)e->bytes);
    buf_append(&b, num, (size_t)n);
    field(&b, "reason", e->reason);
    if (e->stream)
        field(&b, "stream_id", e->stream);
    buf_append(&b, "}\n", 2);
    ssize_t w = write(fd, b.data, b.len);
    (void)w;
    buf_dispose(&b);
}
