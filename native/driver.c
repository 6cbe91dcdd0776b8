/*
 * driver.c: the engine's own drivers (driver.h), used when no sink brings one.
 *
 *  - timer: clock_nanosleep(TIMER_ABSTIME) on CLOCK_MONOTONIC, one deadline per period.  Each
 *    tick takes (discards) a period from the output ring, as a device would: the null sink.
 *    Whole periods missed are skipped, not caught up (an xrun, as on a device).
 *  - consumer: a sink's thread takes periods and calls sc_engine_periods_consumed(), which
 *    bumps a futex word; the mixer wakes at once.  Its waits are bounded (100 ms) so a stop
 *    is seen even if the sink never signals.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "engine_internal.h"

/* ---- timer (the null sink) ---------------------------------------------------------------- */

static int timer_attach(void *ctx, sc_engine *e)
{
    (void)ctx;
    e->timer.deadline_ns = e->start_ns + e->period_ns;
    return 0;
}

static int timer_wait(void *ctx, sc_engine *e, sc_wake *w)
{
    (void)ctx;
    const int64_t period = e->period_ns;
    int64_t deadline = e->timer.deadline_ns;
    struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
    w->late_ns = sc_now_ns() - deadline;
    w->consumed = 1;
    if (w->late_ns >= period) { /* whole periods missed: skip them, as a device would */
        uint64_t missed = (uint64_t)(w->late_ns / period);
        sc_count(&e->skipped, missed);
        w->consumed += (uint32_t)missed;
        deadline += (int64_t)missed * period;
        w->flags |= SC_TRACE_XRUN;
    }
    e->timer.deadline_ns = deadline + period;
    return SC_DRIVER_CYCLE;
}

/* What a device would take at this tick: a period per tick; short is an xrun. */
static int timer_take(void *ctx, sc_engine *e, sc_wake *w)
{
    (void)ctx;
    const uint32_t n = e->config.blocksize;
    for (uint32_t i = 0; i < w->consumed; i++) {
        void *src = NULL;
        int64_t k = sc_ring_read_region(e->output, n, &src);
        if (k < (int64_t)n)
            w->flags |= SC_TRACE_XRUN;
        if (k > 0)
            sc_ring_read_advance(e->output, (uint64_t)k);
    }
    return SC_DRIVER_CYCLE;
}

static const sc_driver_ops timer_ops = {
    .attach = timer_attach,
    .wait = timer_wait,
    .take = timer_take,
};

void sc_driver_timer_init(sc_engine *e)
{
    e->own_driver.ops = &timer_ops;
    e->own_driver.ctx = NULL;
}

/* ---- consumer (a sink's thread signals) ----------------------------------------------------- */

#define CONSUMER_WAIT_NS 100000000 /* bounded, so stop is noticed without a sink */

static int consumer_attach(void *ctx, sc_engine *e)
{
    (void)ctx;
    e->consumer.seen = atomic_load_explicit(&e->consumed_seq, memory_order_acquire);
    e->consumer.underruns_seen = atomic_load_explicit(&e->consumer_underruns,
                                                      memory_order_relaxed);
    return 0;
}

static int consumer_wait(void *ctx, sc_engine *e, sc_wake *w)
{
    (void)ctx;
    for (;;) {
        uint32_t now_seq = atomic_load_explicit(&e->consumed_seq, memory_order_acquire);
        if (now_seq != e->consumer.seen) {
            e->consumer.seen = now_seq;
            break;
        }
        if (!atomic_load_explicit(&e->running, memory_order_acquire))
            return SC_DRIVER_STOP;
        sc_futex_wait_until(&e->consumed_seq, now_seq, sc_now_ns() + CONSUMER_WAIT_NS);
    }
    w->late_ns = sc_now_ns() - atomic_load_explicit(&e->consumed_at_ns, memory_order_acquire);
    uint32_t u = atomic_load_explicit(&e->consumer_underruns, memory_order_relaxed);
    if (u != e->consumer.underruns_seen) {
        e->consumer.underruns_seen = u;
        w->flags |= SC_TRACE_XRUN;
    }
    return SC_DRIVER_CYCLE;
}

static void consumer_interrupt(void *ctx)
{
    sc_engine *e = ctx;
    sc_futex_bump_wake(&e->consumed_seq);
}

static const sc_driver_ops consumer_ops = {
    .attach = consumer_attach,
    .wait = consumer_wait,
    .interrupt = consumer_interrupt,
};

void sc_driver_consumer_init(sc_engine *e)
{
    e->own_driver.ops = &consumer_ops;
    e->own_driver.ctx = e;
}

/* ---- the consumer's signal (any sink thread; RT-safe) -------------------------------------- */

void sc_engine_period_consumed(sc_engine *e, int32_t underrun)
{
    sc_engine_periods_consumed(e, 1, underrun);
}

void sc_engine_periods_consumed(sc_engine *e, uint32_t periods, int32_t underrun)
{
    if (underrun)
        atomic_fetch_add_explicit(&e->consumer_underruns, 1, memory_order_relaxed);
    atomic_store_explicit(&e->consumed_at_ns, sc_now_ns(), memory_order_release);
    atomic_fetch_add_explicit(&e->consumed, periods, memory_order_relaxed);
    sc_futex_bump_wake(&e->consumed_seq);
}
