/*
 * guard: process-wide connection admission — a total cap and a cap per
 * source address.
 *
 * Shared by every worker's accept path under one short lock: the kernel
 * spreads one address's connections over all SO_REUSEPORT listeners, so
 * a per-worker count would let a single client hold nworkers times its
 * share.
 */
#ifndef SLUICE_GUARD_H
#define SLUICE_GUARD_H

#include <stdbool.h>
#include <stddef.h>

struct guard;

struct guard *guard_new(size_t max_total, size_t max_per_address);
/* guard_free(NULL) is a no-op. */
void guard_free(struct guard *g);
/*
 * Counts a new connection from address (an IP, no port), or refuses it:
 * false with *limit set to "connections" or "connections_per_address".
 * Thread-safe.
 */
bool guard_admit(struct guard *g, const char *address, const char **limit);
/* Uncounts a connection guard_admit() took. Thread-safe. */
void guard_release(struct guard *g, const char *address);

#endif
