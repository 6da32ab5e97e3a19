/*
 * cl_file: files the client programs write for whoever drives them (the
 * e2e harness, bench scripts). Written aside and renamed into place, so a
 * poller never reads a partial file.
 */
#ifndef SLUICE_CL_FILE_H
#define SLUICE_CL_FILE_H

/* Writes "ready\n" to path atomically; logs (cl_log) and returns -1 on
 * failure, else 0. */
int cl_file_write_ready(const char *path);

#endif
