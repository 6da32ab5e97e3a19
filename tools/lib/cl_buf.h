/*
 * cl_buf: a growable byte buffer, embedded in the structs that own it.
 * Lengths are 32-bit so that 200,000 streams' parser buffers stay small;
 * growing past 4 GiB aborts (no client keeps that much of one response).
 * Capacity doubles from 64 bytes, and is freed only by cl_buf_dispose(),
 * so a buffer reused per line or per event stops allocating once warm.
 */
#ifndef SLUICE_CL_BUF_H
#define SLUICE_CL_BUF_H

#include <stddef.h>
#include <stdint.h>

struct cl_buf {
    char *p;      /* owned; NULL until the first append */
    uint32_t len; /* bytes used; len <= cap */
    uint32_t cap; /* bytes allocated */
};

/* Appends n bytes (n may be 0; data may then be NULL). */
void cl_buf_append(struct cl_buf *b, const void *data, size_t n);
/* Replaces the contents with the n bytes at data. */
void cl_buf_set(struct cl_buf *b, const void *data, size_t n);
/* Drops the first n bytes (n <= len), keeping the rest in order. */
void cl_buf_consume(struct cl_buf *b, size_t n);
/* Frees the bytes; the buffer is empty and reusable afterwards. */
void cl_buf_dispose(struct cl_buf *b);

#endif
