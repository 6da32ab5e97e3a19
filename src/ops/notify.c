/*
 * notify: sd_notify messages to the service manager (see notify.h).
 *
 * libsystemd rather than our own datagram writer: Debian ships it
 * everywhere systemd runs, and it knows the protocol's corners (abstract
 * socket names, $WATCHDOG_PID matching the pid, unsetting nothing so
 * that a re-exec keeps them). Optional at build time: a system without
 * it gets no-ops, and a unit with Type=notify then fails to start, which
 * is the right loud failure (server.c logs that the build lacks it when
 * NOTIFY_SOCKET is set).
 */
#include "sluice/notify.h"

#ifdef SLUICE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

bool notify_supported(void) { return true; }

void notify_ready(const char *status) { sd_notifyf(0, "READY=1\nSTATUS=%s", status); }

void notify_stopping(const char *status) { sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status); }

void notify_watchdog(void) { sd_notify(0, "WATCHDOG=1"); }

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

#else

bool notify_supported(void) { return false; }
void notify_ready(const char *status) { (void)status; }
void notify_stopping(const char *status) { (void)status; }
void notify_watchdog(void) {}
uint64_t notify_watchdog_usec(void) { return 0; }

#endif
