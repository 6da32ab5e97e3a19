/*
 * static_file: the static files a worker serves (config key www, the demo
 * page), found safely under the configured directory and handed out as
 * shared filecache entries.
 *
 * The request pipeline routes GET /<file> here (request.c serve_file())
 * and answers 200 with the entry as the body, 404 or 503 otherwise; this
 * module only decides which file that is and whether it may be served.
 */
#ifndef SLUICE_STATIC_FILE_H
#define SLUICE_STATIC_FILE_H

struct filecache_entry;
struct request_env;

/* Largest static file served; a larger one is not found. */
#define STATIC_FILE_MAX_BYTES (4 * 1024 * 1024)

/*
 * The static file from env's configured directory, as a shared entry of
 * env->files (one reference, for filecache_unref()). 0, or ERR_NOTFOUND
 * for anything but a regular file inside the directory (symbolic links
 * leading out of it included) or past STATIC_FILE_MAX_BYTES, or ERR_AGAIN
 * when the file cache is full of files being sent (answer 503; counted in
 * env->stats->file_cache, logged at most once a second per worker).
 */
int static_file_open(const struct request_env *env, const char *file,
                     struct filecache_entry **out);

#endif
