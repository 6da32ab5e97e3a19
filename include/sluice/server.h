/*
 * server: the process — listeners, TLS, NATS bus, workers, admin listener
 * and access log, started together and stopped in reverse order.
 *
 * Signals (taken by the main thread only):
 *   SIGTERM, SIGINT  graceful drain, then exit 0; a second one exits at once
 *   SIGHUP           reload the certificate and key, and the log level
 *   SIGUSR1          reopen the access log file
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

struct config;

/*
 * Runs until stopped. argc/argv are kept to re-read the configuration on
 * SIGHUP with the same precedence (file, then flags). Returns the process
 * exit code; errors are logged.
 */
int server_run(const struct config *cfg, int argc, char **argv);

#endif
