/*
 * host: whether a request's Host (HTTP/1.1) or :authority (h2) names this
 * gateway, against DNS rebinding (pure).
 *
 * A page on evil.example can rebind its name to 127.0.0.1 and then call a
 * loopback gateway as "its own origin": the browser sends Host:
 * evil.example. Without authentication (auth none, the admin listener)
 * the only defence is to refuse names the operator did not give the
 * gateway. Accepted: "localhost", any IP literal (a rebinding page always
 * uses a DNS name, and a page naming an IP literal is an ordinary
 * cross-origin caller, which CORS already governs; refusing literals would
 * break health probes and scrapes that address a pod by its IP), and the
 * names listed in allowed-hosts. Any port; case and one trailing dot are
 * ignored. An absent Host is the caller's business (only a non-browser
 * omits it: HTTP/1.0 health checks do); an empty one is refused.
 */
#ifndef SLUICE_HOST_H
#define SLUICE_HOST_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when host (len bytes, "name[:port]" or "[v6]:port") is localhost,
 * an IP literal, or a name in list ("NAME,NAME", may be "" or NULL).
 * Anything malformed is false.
 */
bool host_allowed(const char *host, size_t len, const char *list);

#endif
