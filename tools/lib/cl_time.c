/*
 * cl_time: see cl_time.h. clock_gettime() only; no caching, since the
 * callers time single events and a cached clock would blur them.
 */
#include "cl_time.h"

#include <time.h>

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double cl_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

uint64_t cl_time_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

uint64_t cl_time_real_ns(void) { return clock_ns(CLOCK_REALTIME); }
