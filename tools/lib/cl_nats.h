/*
 * cl_nats: the NATS connection of the client programs that publish
 * (sluice-bench's publisher thread, sluice-probe's events).
 *
 * One call makes the connection the way both want it: named after the
 * program (so that nats-server's monitoring tells them apart), a bounded
 * connect, and optionally SendAsap (each publish leaves at once instead
 * of waiting for the flusher: a latency benchmark measures the gateway,
 * not cnats's batching). cnats's own threads deliver nothing to the
 * programs: they never subscribe.
 *
 * It is its own library (sluice_client_nats) so that programs that never
 * publish, such as sluice-client, do not link cnats.
 */
#ifndef SLUICE_CL_NATS_H
#define SLUICE_CL_NATS_H

#include <stdbool.h>

#include <nats/nats.h>

#define CL_NATS_CONNECT_TIMEOUT_MS 3000

/*
 * A connection to url (nats://HOST:PORT), or NULL with the reason on
 * stderr. The caller destroys it, and calls nats_Close() before exiting.
 */
natsConnection *cl_nats_connect(const char *url, bool send_asap);

#endif
