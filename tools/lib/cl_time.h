/*
 * cl_time: the clocks the client programs read. Monotonic for every
 * duration and deadline; the wall clock only where a timestamp crosses a
 * process boundary (bench payloads carry CLOCK_REALTIME ns).
 */
#ifndef SLUICE_CL_TIME_H
#define SLUICE_CL_TIME_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds, fractional. */
double cl_time_mono_ms(void);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t cl_time_mono_ns(void);
/* CLOCK_REALTIME in nanoseconds since 1970. */
uint64_t cl_time_real_ns(void);

#endif
