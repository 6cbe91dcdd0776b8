/*
 * driver.h: what wakes the mixer, as the engine sees it.  One interface, three kinds:
 *  - timer (engine-owned): a CLOCK_MONOTONIC deadline per period, taking one period from the
 *    output ring per tick as a device would (the null sink);
 *  - consumer (engine-owned): a sink's own thread (PortAudio's callback, a file sink's writer)
 *    takes periods and calls sc_engine_periods_consumed(), which wakes the mixer by futex;
 *  - a sink's own driver (the pipe sink): the mixer thread itself hands what it rendered to
 *    the consumer and waits on it.
 * The driver is chosen when the engine starts and stays until it stops; the engine never
 * names a sink, and a sink sees only this interface and the public header.
 *
 * Every op but `attach` runs on the mixer thread and obeys its rules (no allocation, lock,
 * log or Python; only the driver's own waits and non-blocking I/O).  The driver's memory must
 * be mapped and locked like the engine's, and outlive the engine's use of it (from
 * sc_engine_start until sc_engine_stop returns).
 */
#ifndef STREAMCORE_DRIVER_H
#define STREAMCORE_DRIVER_H

#include <stdint.h>

#include "rt.h"
/* streamcore.h (no include guard: cffi parses it) must come first, for sc_engine. */

/* What one wake-up was: filled by `wait` and `take`, read by the cycle. */
typedef struct sc_wake {
    int64_t woke_ns;       /* CLOCK_MONOTONIC when the cycle began (set by the mixer loop) */
    int64_t late_ns;       /* the wake-up's lateness against its cause (deadline, signal) */
    uint32_t flags;        /* SC_TRACE_*: XRUN, and PIPE for a driver that is the clock's
                              consumer itself (no wake-up latency to measure) */
    uint32_t consumed;     /* periods the consumer gave back in this wake-up */
} sc_wake;

#define SC_DRIVER_CYCLE 0  /* wait: run a cycle */
#define SC_DRIVER_STOP 1   /* wait/take: the driver is done; the mixer leaves its loop */

typedef struct sc_driver_ops {
    /* Control thread, in sc_engine_start before the mixer starts: reset for a new run.
     * 0 or -errno (the start fails). */
    int (*attach)(void *ctx, sc_engine *e);
    /* Block until a cycle is due: SC_DRIVER_CYCLE, SC_DRIVER_STOP or -errno (the driver
     * failed: recorded as the engine's driver error, the mixer ends). */
    int (*wait)(void *ctx, sc_engine *e, sc_wake *w);
    /* In the cycle, before rendering (counted in the cycle's time): give what is rendered to
     * the consumer / take what it consumed.  Same returns as wait; the cycle still renders. */
    int (*take)(void *ctx, sc_engine *e, sc_wake *w);
    /* After the cycle rendered `rendered` periods. */
    void (*rendered)(void *ctx, sc_engine *e, uint32_t rendered);
    /* The mixer is leaving its loop (err: 0, or the errno that ended it). */
    void (*detach)(void *ctx, sc_engine *e, int err);
    /* Any thread (sc_engine_stop): end a wait now; the mixer then sees `running` off. */
    void (*interrupt)(void *ctx);
    /* Optional.  After a cycle that rendered nothing because the engine holds (no content):
     * 1 while the driver still has rendered output to hand over (the mixer keeps calling wait
     * and take), 0 when all of it is out (the mixer then sleeps until there is work).  NULL:
     * never anything pending (the consumer takes what it wants by itself). */
    int (*pending)(void *ctx, sc_engine *e);
} sc_driver_ops;

/* Any thread: wake a mixer that sleeps for want of content (it then looks at its driver). */
void sc_engine_wake_for_work(sc_engine *e);

struct sc_driver {
    const sc_driver_ops *ops;
    void *ctx;
};

#endif
