/*
 * server: the process — listeners, TLS context, NATS bus and workers,
 * started together and stopped in reverse order on SIGINT or SIGTERM.
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

struct config;

/* Runs until a stop signal. Returns the process exit code; errors are logged. */
int server_run(const struct config *cfg);

#endif
