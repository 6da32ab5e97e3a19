/*
 * notify: the systemd service manager protocol (sd_notify), for
 * Type=notify units: readiness, the start of a drain, watchdog pings.
 *
 * Built on libsystemd's sd_notify when the build found it (pkg-config
 * libsystemd, SLUICE_HAVE_SYSTEMD); without it every call does nothing
 * and notify_watchdog_usec() is 0, so the gateway runs the same outside
 * systemd or on a system without libsystemd. Every call is thread-safe
 * and never blocks (a datagram to $NOTIFY_SOCKET).
 */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* True when built with libsystemd (else the calls below do nothing). */
bool notify_supported(void);
/* READY=1 with a STATUS= line: every listener is bound, every loop runs, NATS is connected. */
void notify_ready(const char *status);
/* STOPPING=1: a drain has begun. */
void notify_stopping(const char *status);
/* WATCHDOG=1: every worker loop has run recently. */
void notify_watchdog(void);
/*
 * The watchdog interval systemd asks for ($WATCHDOG_USEC, for this pid),
 * in microseconds; 0 when no watchdog is wanted or without libsystemd.
 */
uint64_t notify_watchdog_usec(void);

#endif
