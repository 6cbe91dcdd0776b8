/*
 * mixer_thread.c: the engine's start and stop, and the mixer thread's one loop:
 *
 *     wait on the driver -> take (hand over / take back) -> one cycle (cycle.c) -> repeat
 *
 * The driver (driver.h) is chosen at sc_engine_start: a sink's own, or the engine's timer or
 * consumer driver.  The loop ends when the engine stops, or when the driver stops or fails on
 * its own (its errno is kept as driver_error and the mixer_done flag tells Python).  The
 * thread runs on a locked, prefaulted stack (rt.c), blocks SIGPIPE (a pipe whose reader went
 * away is EPIPE, not death) and makes no syscall but its driver's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "engine_internal.h"

#define MIXER_STACK_BYTES (256 * 1024)

static void spin_if_asked(sc_engine *e)
{
    /* A compare-and-swap, not load + store: a request Python makes meanwhile is kept. */
    uint32_t cycles = atomic_load_explicit(&e->spin_cycles, memory_order_acquire);
    do {
        if (cycles == 0)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&e->spin_cycles, &cycles, cycles - 1,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire));
    int64_t until = sc_now_ns() + atomic_load_explicit(&e->spin_ns, memory_order_relaxed);
    while (sc_now_ns() < until && atomic_load_explicit(&e->running, memory_order_relaxed))
        ; /* the test's runaway: burns the CPU inside the cycle */
}

static void wait_for_work(sc_engine *e)
{
    const uint32_t seq = atomic_load_explicit(&e->work_seq, memory_order_seq_cst);
    atomic_store_explicit(&e->idle_waiting, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&e->running, memory_order_seq_cst))
        sc_futex_wait_until(&e->work_seq, seq, sc_now_ns() + e->period_ns);
    atomic_store_explicit(&e->idle_waiting, 0, memory_order_relaxed);
}

void sc_engine_wake_for_work(sc_engine *e)
{
    atomic_fetch_add_explicit(&e->work_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&e->idle_waiting, memory_order_seq_cst))
        sc_futex_bump_wake(&e->work_seq);
    /* Where silence is not time, the mixer may also sit in the consumer driver's wait while
     * the consumer has nothing left to take (the run's last piece): a drain or a new voice
     * must reach it there too. */
    if (e->config.content != SC_CONTENT_CLOCK)
        sc_futex_bump_wake(&e->consumed_seq);
}

static void *mixer_main(void *arg)
{
    sc_engine *e = arg;
    const sc_driver *d = e->driver;
    const sc_driver_ops *ops = d->ops;
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0); /* 1 ns: wake at the deadline, not 50 µs after */
    sc_block_sigpipe();
    int err = 0;
    int idle = e->holding; /* the last cycle (or the prefill) held and rendered nothing */
    while (atomic_load_explicit(&e->running, memory_order_acquire)) {
        sc_wake w = {0};
        if (idle && !(ops->pending && ops->pending(d->ctx, e))) {
            /* All that was rendered is out: sleep until there is work (a command, a drain, a
             * stop), or for a period (a stream voice's producer writes its ring without
             * waking us).  Then a cycle looks again, without the driver's wait. */
            wait_for_work(e);
        } else {
            int rc = ops->wait(d->ctx, e, &w);
            if (rc != SC_DRIVER_CYCLE) {
                err = rc < 0 ? -rc : 0;
                break;
            }
        }
        if (!atomic_load_explicit(&e->running, memory_order_acquire))
            break;
        w.woke_ns = sc_now_ns();
        atomic_store_explicit(&e->busy_since_ns, w.woke_ns, memory_order_release);
        spin_if_asked(e);
        int took = ops->take ? ops->take(d->ctx, e, &w) : SC_DRIVER_CYCLE;
        if (w.consumed)
            atomic_fetch_add_explicit(&e->consumed, w.consumed, memory_order_relaxed);
        uint32_t rendered = sc_cycle_run(e, &w, NULL);
        idle = rendered == 0 && e->holding;
        if (ops->rendered)
            ops->rendered(d->ctx, e, rendered);
        if (took != SC_DRIVER_CYCLE) {
            err = took < 0 ? -took : 0;
            break;
        }
    }
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_release);
    if (ops->detach)
        ops->detach(d->ctx, e, err);
    if (err)
        atomic_store_explicit(&e->driver_error, err, memory_order_release);
    atomic_store_explicit(&e->mixer_done, 1, memory_order_release);
    /* Producers blocked on a stream voice's ring (sc_ring_wait_writable) look again: nothing
     * will read it until a start (readers of the tap likewise). */
    for (uint32_t s = 0; s < SC_MAX_VOICES; s++)
        if (e->voices[s].phase != SC_PHASE_FREE && e->voices[s].ring != NULL)
            sc_ring_wake(e->voices[s].ring);
    if (e->tap != NULL)
        sc_ring_wake(e->tap);
    if (atomic_load_explicit(&e->progress_watchers, memory_order_acquire) > 0) {
        uint64_t one = 1; /* event loops waiting for room look again: no more is coming */
        ssize_t ignored = write(e->progress_fd, &one, sizeof one);
        (void)ignored;
    }
    return NULL;
}

int sc_engine_start(sc_engine *e, sc_ring *output, const sc_driver *driver)
{
    if (e->config.clock == SC_CLOCK_MANUAL || output == NULL)
        return -EINVAL;
    if (e->driver)
        return -EALREADY;
    if (sc_ring_channels(output) != e->config.channels ||
        sc_ring_format(output) != e->config.format ||
        sc_ring_capacity(output) < e->target_fill)
        return -EINVAL;
    /* A new mixer thread: nothing granted yet (Python says so once it is). */
    atomic_store_explicit(&e->granted_policy, -1, memory_order_release);
    if (driver == NULL) {
        if (e->config.clock == SC_CLOCK_TIMER)
            sc_driver_timer_init(e);
        else
            sc_driver_consumer_init(e);
        driver = &e->own_driver;
    }
    if (driver->ops == NULL || driver->ops->wait == NULL)
        return -EINVAL;
    e->output = output;
    e->driver = driver;
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->streak, 0, memory_order_relaxed);
    atomic_store_explicit(&e->driver_error, 0, memory_order_relaxed);
    atomic_store_explicit(&e->mixer_done, 0, memory_order_relaxed);
    sc_cycle_prefill(e); /* the initial periods, before the clock runs */
    e->start_ns = sc_now_ns();
    int rc = driver->ops->attach ? driver->ops->attach(driver->ctx, e) : 0;
    if (rc) {
        e->driver = NULL; /* not started */
        return rc;
    }
    atomic_store_explicit(&e->running, 1, memory_order_release);
    rc = sc_rt_thread_start(&e->mixer, "sc-mixer", mixer_main, e, MIXER_STACK_BYTES,
                            e->config.lock_memory);
    if (rc) {
        atomic_store_explicit(&e->running, 0, memory_order_release);
        if (driver->ops->detach)
            driver->ops->detach(driver->ctx, e, -rc);
        e->driver = NULL; /* not started */
        return rc;
    }
    if (e->config.lock_memory && !e->mixer.stack_locked)
        sc_taint(e, SC_TAINT_MLOCK_FAILED);
    if (e->config.watchdog) {
        rc = sc_watchdog_start(e);
        if (rc) {
            sc_engine_stop(e);
            return rc;
        }
    }
    return 0;
}

int sc_engine_stop(sc_engine *e)
{
    if (!e->driver)
        return 0;
    atomic_store_explicit(&e->running, 0, memory_order_release);
    sc_engine_wake_for_work(e);
    if (e->driver->ops->interrupt)
        e->driver->ops->interrupt(e->driver->ctx);
    sc_rt_thread_join(&e->mixer);
    sc_watchdog_stop(e);
    e->driver = NULL;
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_relaxed);
    return 0;
}
