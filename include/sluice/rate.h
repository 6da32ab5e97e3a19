/*
 * rate: a token bucket (pure: no I/O, no clock of its own).
 *
 * `rate` tokens a second flow in, up to `burst`; a cost is taken whole or
 * not at all. The caller passes the time, so tests drive it with plain
 * numbers. A fractional token count is kept so that a rate below the
 * caller's call frequency still refills.
 */
#ifndef SLUICE_RATE_H
#define SLUICE_RATE_H

#include <stdbool.h>

struct rate_bucket {
    double tokens; /* 0 <= tokens <= burst */
    double at_s;   /* when tokens was last refilled, caller's clock, seconds */
};

/* A full bucket at now_s. */
void rate_init(struct rate_bucket *b, double burst, double now_s);
/*
 * Refills for the time since the last call, then takes cost tokens if
 * that many are there. True when taken; false leaves the tokens as they
 * were (after the refill).
 */
bool rate_take(struct rate_bucket *b, double rate, double burst, double now_s, double cost);

#endif
