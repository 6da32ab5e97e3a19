/*
 * forwarded: who the client is behind trusted proxies (pure) — the
 * trusted networks (`trusted-proxies`, CIDRs), and the client address a
 * request's `Forwarded` (RFC 7239) or `X-Forwarded-For` header names.
 *
 * The rule, the same for both headers: the hops are read from the right
 * (the entry the nearest proxy appended) and the first address that is
 * not itself a trusted proxy is the client. Only what is reached needs to
 * be well formed, so a client cannot push its own requests onto the
 * proxy's address by sending a garbled header that the proxy then appends
 * to. An entry reached that names no usable address ("unknown", an
 * obfuscated node, a Forwarded element without for=) ends the walk with
 * no answer: skipping it would hand the decision to whatever the client
 * wrote further left. When every hop is trusted, the leftmost is the
 * client. `Forwarded` wins when both headers are present.
 *
 * The caller decides whether to ask at all: only when the TCP peer (or the
 * PROXY protocol's client) is itself in the trusted networks; from anyone
 * else these headers are spoofable and ignored.
 *
 * Rejected: nginx's real_ip without recursion (the rightmost entry, trusted
 * or not): behind two layers of proxies it names the inner proxy.
 */
#ifndef SLUICE_FORWARDED_H
#define SLUICE_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>

#define FORWARDED_NETS_MAX 64    /* CIDRs in trusted-proxies */
#define FORWARDED_HEADER_MAX 4096 /* bytes of either header kept per request */
#define FORWARDED_HOPS_MAX 32    /* entries read from the right before giving up */
#define FORWARDED_ADDRESS_MAX 46 /* INET6_ADDRSTRLEN */

struct forwarded_nets;

/*
 * Parses a comma-separated list of CIDRs ("10.0.0.0/8, 2001:db8::/32",
 * a bare IP meaning one address; spaces allowed around commas). An empty
 * list is a valid empty set. 0 with *out set (the caller frees it), or
 * ERR_INVALID with one line in err naming the bad entry.
 */
int forwarded_nets_parse(const char *list, struct forwarded_nets **out, char *err,
                         size_t errlen);
/* forwarded_nets_free(NULL) does nothing. */
void forwarded_nets_free(struct forwarded_nets *n);
/* CIDRs in n (0 for NULL). */
size_t forwarded_nets_count(const struct forwarded_nets *n);
/*
 * Whether ip (text form; an IPv4-mapped IPv6 address counts as its IPv4
 * address) is in one of n's networks. False for NULL n or a bad ip.
 */
bool forwarded_nets_contains(const struct forwarded_nets *n, const char *ip);

/*
 * The client a request names. forwarded and xff are the header values
 * (several fields of one name joined with ", "), each NULL when absent.
 * Returns 0 with the client's IP (canonical text form, no port) in out;
 * ERR_NOTFOUND when neither header is present or the walk reached an
 * entry with no usable address; ERR_INVALID when an entry it reached is
 * malformed (the caller counts it and keeps the peer address).
 */
int forwarded_client(const struct forwarded_nets *trusted, const char *forwarded,
                     const char *xff, char *out, size_t outlen);

#endif
