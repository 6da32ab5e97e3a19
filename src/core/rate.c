/*
 * rate: token bucket (see rate.h). A cost larger than the burst can never
 * be taken; callers size costs (subjects per request) below the burst.
 */
#include "sluice/rate.h"

void rate_init(struct rate_bucket *b, double burst, double now_s)
{
    b->tokens = burst;
    b->at_s = now_s;
}

bool rate_take(struct rate_bucket *b, double rate, double burst, double now_s, double cost)
{
    /* A clock that steps back (another caller's older reading) refills nothing. */
    if (now_s > b->at_s) {
        b->tokens += (now_s - b->at_s) * rate;
        b->at_s = now_s;
    }
    if (b->tokens > burst)
        b->tokens = burst;
    if (b->tokens < cost)
        return false;
    b->tokens -= cost;
    return true;
}
