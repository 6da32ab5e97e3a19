/*
 * static_file: a static file under the configured directory (see
 * static_file.h).
 *
 * The path is resolved (realpath) and must still lie inside the resolved
 * directory; it is opened with O_NOFOLLOW, and the descriptor itself
 * (fstat) must be a regular file no larger than STATIC_FILE_MAX_BYTES.
 * The bytes come from the worker's filecache: one shared copy for every
 * response sending that file, never a copy per request.
 *
 * Rejected: sendfile() straight from the descriptor. Most connections are
 * TLS, where the bytes pass through OpenSSL anyway, and an open
 * descriptor per slow response costs more than one shared copy.
 */
#include "sluice/static_file.h"

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/request.h"
#include "sluice/stream.h"

int static_file_open(const struct request_env *env, const char *file,
                     struct filecache_entry **out)
{
    char root[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
    if (!realpath(env->cfg->www, root))
        return ERR_NOTFOUND;
    int n = snprintf(path, sizeof(path), "%s/%s", root, file);
    if (n < 0 || (size_t)n >= sizeof(path))
        return ERR_NOTFOUND;
    size_t rl = strlen(root);
    /* Resolved, the file must still be inside the directory. */
    if (!realpath(path, real) || strncmp(real, root, rl) != 0 || real[rl] != '/')
        return ERR_NOTFOUND;
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ERR_NOTFOUND;
    struct stat st;
    int rc = ERR_NOTFOUND;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= STATIC_FILE_MAX_BYTES) {
        rc = filecache_get(env->files, real, fd, &st, out);
        if (rc == ERR_LIMIT) {
            static _Thread_local int64_t logged_ms; /* one line a second per worker */
            metrics_add(&env->stats->file_cache, 1);
            if (stream_now_ms() - logged_ms >= 1000) {
                logged_ms = stream_now_ms();
                log_warn("static file %s: file-cache-bytes full of files being sent; 503", file);
            }
            rc = ERR_AGAIN;
        } else if (rc != 0) {
            rc = ERR_NOTFOUND;
        }
    }
    close(fd);
    return rc;
}
