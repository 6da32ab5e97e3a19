/*
 * cl_file: see cl_file.h. rename() within one directory is atomic, so the
 * ".tmp" sibling is the only place a partial file can exist.
 */
#include "cl_file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_log.h"
#include "cl_mem.h"

int cl_file_write_ready(const char *path)
{
    size_t n = strlen(path);
    char *tmp = cl_mem_realloc(NULL, n + 5);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL;
    if (f) {
        ok = fputs("ready\n", f) != EOF;
        ok = fclose(f) == 0 && ok;
    }
    int rc = 0;
    if (!ok || rename(tmp, path) != 0) {
        cl_log_error("%s: %s", path, strerror(errno));
        rc = -1;
    }
    free(tmp);
    return rc;
}
