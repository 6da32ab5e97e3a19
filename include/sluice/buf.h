/*
 * buf: a growable byte buffer with a read offset.
 *
 * Bytes are appended at len and consumed from off; off <= len <= cap.
 * Embedded in its owner (buf_init/buf_dispose).
 */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t off; /* bytes consumed; off <= len */
    size_t len; /* bytes filled; len <= cap */
    size_t cap; /* bytes allocated */
};

void buf_init(struct buf *b);
void buf_dispose(struct buf *b);
void buf_append(struct buf *b, const void *data, size_t n);
/* Room for n more bytes at data + len; returns that pointer. */
uint8_t *buf_reserve(struct buf *b, size_t n);
static inline size_t buf_pending(const struct buf *b) { return b->len - b->off; }
/* Drops n consumed bytes; when everything is consumed, rewinds to 0. */
void buf_consume(struct buf *b, size_t n);

#endif
