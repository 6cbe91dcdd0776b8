/*
 * clock.c: the mixer thread and what wakes it.
 *
 * Two clocks:
 *  - the timer clock: clock_nanosleep(TIMER_ABSTIME) on CLOCK_MONOTONIC, one deadline per
 *    period; with the null sink, each tick takes (discards) one period from the output ring,
 *    as a device would;
 *  - the consumer clock: a sink (in C, in its own thread) reads a period from the output ring
 *    (sc_engine_output) and calls sc_engine_period_consumed(), which bumps a futex word and
 *    wakes the mixer at once;
 *  - the pipe clock, within the consumer clock: a pipe sink attaches the mixer as its writer
 *    (sc_engine_attach_writer), and the mixer vmsplices what it rendered itself, waiting in
 *    poll() on the pipe while it is full (pipe_loop).
 * Either way, after waking the mixer applies commands and renders periods until the output
 * ring holds `periods` periods again (double buffering: it renders k+1 while k plays).
 *
 * The thread's loop makes no syscall but its wait (clock_nanosleep, futex, or poll on the
 * pipe) and, on the pipe clock, a non-blocking vmsplice of pages it already owns:
 * clock_gettime is the vDSO, the ring calls are atomics, the mixer touches only mlocked memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine_internal.h"

#define MIXER_STACK_BYTES (256 * 1024)

static int futex_wait_abs(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
    return (int)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
                        expected, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

/* Render periods until the output ring holds target_fill frames; returns periods rendered,
 * and the fill afterwards in *fill. */
static uint32_t render_until_full(sc_engine *e, int64_t *fill)
{
    sc_ring *out = e->output;
    const uint32_t n = e->config.blocksize;
    uint32_t rendered = 0;
    sc_mixer_apply_commands(e);
    int64_t have = sc_ring_readable(out);
    if (have >= 0 && have < e->target_fill) /* what this cycle is about to render */
        atomic_store_explicit(&e->cycle_periods, (uint32_t)((e->target_fill - have) / n),
                              memory_order_release);
    for (;; have = sc_ring_readable(out)) {
        if (have < 0 || have + n > e->target_fill) {
            *fill = have;
            return rendered;
        }
        void *dst = NULL;
        int64_t k = sc_ring_write_region(out, n, &dst);
        if (k < (int64_t)n) { /* cannot happen: capacity >= target_fill (checked at start) */
            *fill = have;
            return rendered;
        }
        sc_mixer_render_period(e, dst);
        sc_ring_write_advance(out, n);
        rendered++;
    }
}

/* The null sink: what a device would take at this tick.  false when it found < 1 period. */
static bool null_sink_take(sc_engine *e, uint64_t periods)
{
    sc_ring *out = e->output;
    const uint32_t n = e->config.blocksize;
    bool full = true;
    for (uint64_t i = 0; i < periods; i++) {
        void *src = NULL;
        int64_t k = sc_ring_read_region(out, n, &src);
        if (k < (int64_t)n)
            full = false;
        if (k > 0)
            sc_ring_read_advance(out, (uint64_t)k);
        sc_count(&e->consumed, 1);
    }
    return full;
}

static void spin_if_asked(sc_engine *e)
{
    uint32_t cycles = atomic_load_explicit(&e->spin_cycles, memory_order_acquire);
    if (cycles == 0)
        return;
    atomic_store_explicit(&e->spin_cycles, cycles - 1, memory_order_relaxed);
    int64_t until = sc_now_ns() + atomic_load_explicit(&e->spin_ns, memory_order_relaxed);
    while (sc_now_ns() < until && atomic_load_explicit(&e->running, memory_order_relaxed))
        ; /* the test's runaway: burns the CPU inside the cycle */
}

static void end_cycle(sc_engine *e, int64_t woke, int64_t late, uint32_t flags,
                      uint32_t rendered, int64_t fill)
{
    int64_t done = sc_now_ns();
    int64_t mix_ns = done - woke;
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_release);
    /* The budget and the hard limit are per period of audio: a cycle that renders k periods
     * (the consumer took k at once) may take k times as long. */
    const int64_t periods = rendered > 1 ? rendered : 1;
    if (mix_ns > e->config.budget_ns * periods) {
        sc_count(&e->overruns, 1);
        atomic_store_explicit(&e->streak, atomic_load_explicit(&e->streak, memory_order_relaxed) + 1,
                              memory_order_release);
    } else {
        atomic_store_explicit(&e->streak, 0, memory_order_release);
    }
    if (mix_ns > e->config.hard_limit_ns * periods)
        sc_count(&e->hard_overruns, 1);
    if (flags & SC_TRACE_XRUN) {
        sc_count(&e->xruns, 1);
        sc_taint(e, SC_TAINT_XRUN);
    }
    if (atomic_load_explicit(&e->demoted, memory_order_relaxed))
        flags |= SC_TRACE_DEMOTED;
    if (!(flags & SC_TRACE_PIPE))
        sc_histogram_add(&e->telemetry.late, late);
    sc_histogram_add(&e->telemetry.mix, mix_ns);
    uint64_t cycle = sc_read(&e->cycles);
    sc_trace_record r = {
        .cycle = cycle,
        .wake_ns = woke,
        .late_ns = late,
        .mix_ns = mix_ns,
        .fill = fill < 0 ? 0 : (uint32_t)fill,
        .voices = e->active_voices,
        .flags = flags,
        .rendered = rendered,
    };
    sc_telemetry_record(&e->telemetry, &r);
    atomic_store_explicit(&e->fill_now, r.fill, memory_order_relaxed);
    sc_count(&e->cycles, 1);
    sc_telemetry_answer_snapshot(e);
}

static void timer_loop(sc_engine *e)
{
    const int64_t period = e->period_ns;
    int64_t deadline = e->start_ns + period;
    while (atomic_load_explicit(&e->running, memory_order_acquire)) {
        struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        int64_t woke = sc_now_ns();
        atomic_store_explicit(&e->busy_since_ns, woke, memory_order_release);
        int64_t late = woke - deadline;
        uint32_t flags = 0;
        uint64_t ticks = 1;
        if (late >= period) { /* whole periods missed: skip them, as a device would */
            uint64_t missed = (uint64_t)(late / period);
            sc_count(&e->skipped, missed);
            ticks += missed;
            deadline += (int64_t)missed * period;
            flags |= SC_TRACE_XRUN;
        }
        deadline += period;
        if (e->config.sink == SC_SINK_NULL && !null_sink_take(e, ticks))
            flags |= SC_TRACE_XRUN;
        spin_if_asked(e);
        int64_t fill = 0;
        uint32_t rendered = render_until_full(e, &fill);
        end_cycle(e, woke, late, flags, rendered, fill);
    }
}

/* The mixer writes the pipe itself (native/pipe_sink.c): a cycle hands over what is rendered
 * (as much as the pipe takes), renders into the pages that came back, and waits in poll() for
 * the reader only when the pipe is full.  The reader is the clock; there is no other thread
 * to wake, so no wake-up latency to measure (SC_TRACE_PIPE). */
#define PIPE_WAIT_MS 100 /* bounded, so stop() is noticed even if nothing wakes the poll */
static void pipe_loop(sc_engine *e, sc_pipe_sink *s)
{
    int rc = 0;
    while (atomic_load_explicit(&e->running, memory_order_acquire) && !sc_pipe_sink_stop_asked(s)) {
        int64_t woke = sc_now_ns();
        atomic_store_explicit(&e->busy_since_ns, woke, memory_order_release);
        spin_if_asked(e);
        uint32_t released = 0;
        rc = sc_pipe_sink_pump(s, &released);
        sc_count(&e->consumed, released);
        int64_t fill = 0;
        uint32_t rendered = render_until_full(e, &fill);
        end_cycle(e, woke, 0, SC_TRACE_PIPE, rendered, fill);
        if (rc < 0)
            break;
        if (rc == SC_PUMP_FULL || rendered == 0) {
            int w = sc_pipe_sink_wait(s, PIPE_WAIT_MS);
            if (w < 0) {
                rc = w;
                break;
            }
        }
    }
    sc_pipe_sink_detach(s, rc < 0 ? -rc : 0); /* clears e->pipe_writer */
}

int sc_engine_attach_writer(sc_engine *e, sc_pipe_sink *s)
{
    if (!atomic_load_explicit(&e->running, memory_order_acquire))
        return -EINVAL;
    sc_pipe_sink *none = NULL;
    if (!atomic_compare_exchange_strong(&e->pipe_writer, &none, s))
        return -EBUSY;
    atomic_fetch_add_explicit(&e->consumed_seq, 1, memory_order_release);
    futex_wake(&e->consumed_seq);
    return 0;
}

static void consumer_loop(sc_engine *e)
{
    uint32_t seen = atomic_load_explicit(&e->consumed_seq, memory_order_acquire);
    uint32_t underruns_seen = atomic_load_explicit(&e->consumer_underruns, memory_order_relaxed);
    while (atomic_load_explicit(&e->running, memory_order_acquire)) {
        sc_pipe_sink *writer = atomic_load_explicit(&e->pipe_writer, memory_order_acquire);
        if (writer) {
            pipe_loop(e, writer);
            seen = atomic_load_explicit(&e->consumed_seq, memory_order_acquire);
            continue;
        }
        uint32_t now_seq = atomic_load_explicit(&e->consumed_seq, memory_order_acquire);
        if (now_seq == seen) {
            /* Bounded wait so stop() is noticed even without a sink. */
            futex_wait_abs(&e->consumed_seq, seen, sc_now_ns() + 100000000);
            continue;
        }
        seen = now_seq;
        int64_t woke = sc_now_ns();
        atomic_store_explicit(&e->busy_since_ns, woke, memory_order_release);
        int64_t late = woke - atomic_load_explicit(&e->consumed_at_ns, memory_order_acquire);
        uint32_t flags = 0;
        uint32_t u = atomic_load_explicit(&e->consumer_underruns, memory_order_relaxed);
        if (u != underruns_seen) {
            underruns_seen = u;
            flags |= SC_TRACE_XRUN;
        }
        spin_if_asked(e);
        int64_t fill = 0;
        uint32_t rendered = render_until_full(e, &fill);
        end_cycle(e, woke, late, flags, rendered, fill);
    }
}

static void *mixer_main(void *arg)
{
    sc_engine *e = arg;
    prctl(PR_SET_NAME, "sc-mixer", 0, 0, 0);
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0); /* 1 ns: wake at the deadline, not 50 µs after */
    sigset_t pipe_signal; /* a pipe it writes losing its reader is EPIPE here, not death */
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, NULL);
    int64_t fill = 0;
    render_until_full(e, &fill); /* the initial periods, before the clock runs */
    atomic_store_explicit(&e->fill_now, (uint32_t)(fill < 0 ? 0 : fill), memory_order_relaxed);
    e->start_ns = sc_now_ns();
    atomic_store_explicit(&e->mixer_tid, (int64_t)syscall(SYS_gettid), memory_order_release);
    if (e->config.clock == SC_CLOCK_TIMER)
        timer_loop(e);
    else
        consumer_loop(e);
    /* A writer attached as the mixer stopped is let go, so its stop() need not wait. */
    sc_pipe_sink *writer = atomic_load_explicit(&e->pipe_writer, memory_order_acquire);
    if (writer)
        sc_pipe_sink_detach(writer, 0);
    return NULL;
}

static void wait_for_tid(_Atomic int64_t *tid)
{
    while (atomic_load_explicit(tid, memory_order_acquire) == 0) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

int sc_engine_start(sc_engine *e, sc_ring *output)
{
    if (e->config.clock == SC_CLOCK_MANUAL || output == NULL)
        return -EINVAL;
    if (e->started)
        return -EALREADY;
    sc_ring *ring = output;
    uint32_t format = e->config.format; /* SC_OUT_* == SC_FORMAT_* */
    if (sc_ring_channels(ring) != e->config.channels || sc_ring_format(ring) != format ||
        sc_ring_capacity(ring) < e->target_fill)
        return -EINVAL;
    e->output = ring;

    /* The mixer's stack: mapped, locked and written now, with a guard page below it. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (e->mixer_stack == NULL) {
        size_t bytes = MIXER_STACK_BYTES + page;
        void *stack = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
            return -errno;
        mprotect(stack, page, PROT_NONE);
        if (e->config.lock_memory && mlock((char *)stack + page, MIXER_STACK_BYTES) != 0)
            sc_taint(e, SC_TAINT_MLOCK_FAILED);
        memset((char *)stack + page, 0, MIXER_STACK_BYTES);
        e->mixer_stack = stack;
        e->mixer_stack_bytes = bytes;
    }

    atomic_store_explicit(&e->mixer_tid, 0, memory_order_relaxed);
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->streak, 0, memory_order_relaxed);
    atomic_store_explicit(&e->running, 1, memory_order_release);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, (char *)e->mixer_stack + page, MIXER_STACK_BYTES);
    int rc = pthread_create(&e->mixer_thread, &attr, mixer_main, e);
    pthread_attr_destroy(&attr);
    if (rc) {
        atomic_store_explicit(&e->running, 0, memory_order_release);
        return -rc;
    }
    e->started = 1;
    pthread_setname_np(e->mixer_thread, "sc-mixer");
    wait_for_tid(&e->mixer_tid);
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
    if (!e->started)
        return 0;
    atomic_store_explicit(&e->running, 0, memory_order_release);
    atomic_fetch_add_explicit(&e->consumed_seq, 1, memory_order_release);
    futex_wake(&e->consumed_seq);
    pthread_join(e->mixer_thread, NULL);
    sc_watchdog_stop(e);
    e->started = 0;
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_relaxed);
    return 0;
}

void sc_engine_free_stack(sc_engine *e)
{
    if (e->mixer_stack) {
        munmap(e->mixer_stack, e->mixer_stack_bytes);
        e->mixer_stack = NULL;
    }
}

void sc_engine_period_consumed(sc_engine *e, int32_t underrun)
{
    sc_engine_periods_consumed(e, 1, underrun);
}

void sc_engine_periods_consumed(sc_engine *e, uint32_t periods, int32_t underrun)
{
    if (underrun)
        atomic_fetch_add_explicit(&e->consumer_underruns, 1, memory_order_relaxed);
    atomic_store_explicit(&e->consumed_at_ns, sc_now_ns(), memory_order_release);
    sc_count(&e->consumed, periods);
    atomic_fetch_add_explicit(&e->consumed_seq, 1, memory_order_release);
    futex_wake(&e->consumed_seq);
}

sc_ring *sc_engine_output(const sc_engine *e) { return e->output; }
