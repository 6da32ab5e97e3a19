/*
 * cl_nats: see cl_nats.h.
 */
#include "cl_nats.h"

#include "cl_log.h"

natsConnection *cl_nats_connect(const char *url, bool send_asap)
{
    natsConnection *nc = NULL;
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, CL_NATS_CONNECT_TIMEOUT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, cl_log_prog());
    if (s == NATS_OK && send_asap)
        s = natsOptions_SetSendAsap(no, true);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        cl_log_error("cannot connect to NATS at %s: %s", url, natsStatus_GetText(s));
        return NULL;
    }
    return nc;
}
