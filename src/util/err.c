/* err: names for the shared error codes. */
#include "sluice/err.h"

const char *err_str(int code)
{
    switch (code) {
    case ERR_OK: return "ok";
    case ERR_INVALID: return "invalid";
    case ERR_IO: return "i/o error";
    case ERR_TLS: return "tls error";
    case ERR_NATS: return "nats error";
    case ERR_PROTO: return "protocol error";
    case ERR_LIMIT: return "limit reached";
    case ERR_NOTFOUND: return "not found";
    case ERR_AGAIN: return "try again";
    default: return "unknown error";
    }
}
