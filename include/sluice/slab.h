/*
 * slab: fixed-size, page-aligned slots whose untouched pages cost nothing.
 *
 * Made for buffers that must be large but are mostly never written, like
 * nghttp2's per-session frame buffer (16 KiB, of which an SSE connection
 * writes the first few hundred bytes: DATA goes out with NO_COPY, so only
 * frame headers and HEADERS are serialized into it). From malloc such a
 * block sits in recycled, already dirty heap and costs its whole size in
 * RSS; here each slot starts as zero pages that the kernel backs only
 * when written, and a freed slot is handed back with MADV_DONTNEED.
 *
 * One reservation of address space for the process (MAP_NORESERVE, no
 * memory until touched), a free stack under a mutex: slots are taken and
 * given once per connection, never per event. Thread-safe.
 */
#ifndef SLUICE_SLAB_H
#define SLUICE_SLAB_H

#include <stdbool.h>
#include <stddef.h>

#define SLAB_SLOT_BYTES (20 * 1024) /* five pages: one nghttp2 frame buffer (16,394 bytes) */
#define SLAB_SLOTS_MAX (1u << 18)   /* 262,144 slots: 5 GiB of address space, reserved once */

/*
 * A zero-filled slot of SLAB_SLOT_BYTES, or NULL when the reservation is
 * full or cannot be made (the caller falls back to malloc).
 */
void *slab_alloc(void);
/* Whether p lies in a slot (then slab_free(), not free(), releases it). */
bool slab_owns(const void *p);
/* Gives the slot's pages back to the kernel and the slot to the next slab_alloc(). */
void slab_free(void *p);
/* Slots handed out now (for the metrics and tests). */
size_t slab_in_use(void);

#endif
