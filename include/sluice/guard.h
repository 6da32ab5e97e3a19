/*
 * guard: process-wide connection admission — a total cap and a cap per
 * source address.
 *
 * Shared by every worker's accept path under one short lock: the kernel
 * spreads one address's connections over all SO_REUSEPORT listeners, so
 * a per-worker count would let a single client hold nworkers times its
 * share.
 *
 * An address is counted by its bucket: an IPv4 address alone, an IPv6
 * address by its first ipv6_prefix_bits bits (64 by default: one
 * customer's network is usually a /64, and a /64 holds more addresses
 * than any limit), an IPv4-mapped IPv6 address (::ffff:a.b.c.d, from a
 * dual-stack listener) as its IPv4 address.
 */
#ifndef SLUICE_GUARD_H
#define SLUICE_GUARD_H

#include <stdbool.h>
#include <stddef.h>

struct guard;

/* ipv6_prefix_bits: 1 to 128; 128 counts every IPv6 address alone. */
struct guard *guard_new(size_t max_total, size_t max_per_address, unsigned ipv6_prefix_bits);
/* guard_free(NULL) is a no-op. */
void guard_free(struct guard *g);
/*
 * Counts a new connection from address (an IP, no port), or refuses it:
 * false with *limit set to "connections" or "connections_per_address".
 * A NULL address counts the connection in the total only: a connection
 * from a trusted proxy, whose clients are charged per request or once its
 * PROXY header names them (guard_hold()). Thread-safe.
 */
bool guard_admit(struct guard *g, const char *address, const char **limit);
/*
 * Charges one more holder to address's per-address count alone (not the
 * total), within max_per_address: a connection admitted with a NULL
 * address once its PROXY header names the client, or a request through a
 * trusted proxy for its forwarded client. False, nothing charged, at the
 * cap. Thread-safe.
 */
bool guard_hold(struct guard *g, const char *address);
/* Gives back what guard_hold() charged. Thread-safe. */
void guard_drop(struct guard *g, const char *address);
/*
 * Writes address's bucket to out (NUL-terminated, cut to outlen): the IPv4
 * address, or "prefix/bits" for IPv6; anything unparsable as given.
 */
void guard_bucket(const char *address, unsigned ipv6_prefix_bits, char *out, size_t outlen);
/* Uncounts a connection guard_admit() took (with the same address, NULL too). Thread-safe. */
void guard_release(struct guard *g, const char *address);

#endif
