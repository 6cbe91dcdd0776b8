/*
 * cycle.c: one cycle of the engine, the same for every driver and for manual rendering.
 *
 * A cycle applies the queued commands, renders periods (into the output ring until it holds
 * `periods` periods again: double buffering, k+1 is rendered while k plays; or one period into
 * the caller's buffer for the manual clock), and accounts for itself: the budget and hard
 * limit per period rendered (the watchdog's input), the trace record, the wake-up and mix
 * histograms, and a stats snapshot when one was asked for.  Realtime rules: atomics, the vDSO
 * clock and the mlocked engine only, plus one nonblocking eventfd write per cycle while an
 * event loop waits for progress (sc_engine_watch_progress).
 */
#define _GNU_SOURCE
#include <unistd.h>

#include "engine_internal.h"

/* Streams have ends: whether the next period is held back (not rendered) for want of content.
 * A clock (SC_CONTENT_CLOCK) never holds: silence is time passing.  Otherwise nothing is
 * rendered once the run's end is published; before that SC_CONTENT_ONLY renders only what
 * the voices can fill, and SC_CONTENT_PACED waits for the first voice. */
static bool holds(sc_engine *e)
{
    const uint32_t content = e->config.content;
    if (content == SC_CONTENT_CLOCK)
        return false;
    if (atomic_load_explicit(&e->end_frame, memory_order_relaxed) >= 0)
        return true;
    if (content == SC_CONTENT_ONLY)
        return !sc_mixer_has_content(e);
    if (!e->content_seen && e->active_voices == 0)
        return true;
    e->content_seen = 1;
    return false;
}

/* After the cycle's periods: once a drain was asked (and the commands queued before it are
 * applied) and no voice is left, the run ends at the last frame a voice played. */
static void publish_end(sc_engine *e, int drain_asked)
{
    if (drain_asked && e->active_voices == 0
        && atomic_load_explicit(&e->end_frame, memory_order_relaxed) < 0
        && sc_spsc_peek(&e->commands, SC_COMMAND_SLOTS) < 0) {
        const uint64_t end = e->voiced_until > e->run_first_frame
                                 ? e->voiced_until - e->run_first_frame : 0;
        atomic_store_explicit(&e->end_frame, (int64_t)end, memory_order_release);
    }
    atomic_store_explicit(&e->voiced_frames,
                          e->voiced_until > e->run_first_frame
                              ? e->voiced_until - e->run_first_frame : 0,
                          memory_order_release);
}

/* Render periods until the output ring holds target_fill frames, or the engine holds
 * (e->holding says which); *fill: the fill after. */
static uint32_t render_until_full(sc_engine *e, int64_t *fill)
{
    sc_ring *out = e->output;
    const uint32_t n = e->config.blocksize;
    const int64_t target = atomic_load_explicit(&e->target_fill, memory_order_relaxed);
    uint32_t rendered = 0;
    e->holding = 0;
    int64_t have = sc_ring_readable(out);
    if (have >= 0 && have < target) /* what this cycle is about to render */
        atomic_store_explicit(&e->cycle_periods, (uint32_t)((target - have) / n),
                              memory_order_release);
    for (;; have = sc_ring_readable(out)) {
        if (have < 0 || have + n > target) {
            *fill = have;
            return rendered;
        }
        if (holds(e)) {
            e->holding = 1;
            *fill = have;
            return rendered;
        }
        void *dst = NULL;
        int64_t k = sc_ring_write_region(out, n, &dst);
        if (k < (int64_t)n) { /* cannot happen: capacity >= target_fill (checked at start
                                  and by sc_engine_set_fill) */
            *fill = have;
            return rendered;
        }
        sc_mixer_render_period(e, dst);
        sc_ring_write_advance(out, n);
        rendered++;
    }
}

/* The cycle's time against its budget: per period of audio, so a cycle that renders k
 * periods (the consumer took k at once) may take k times as long.  Manual rendering runs in
 * the caller's thread at the caller's pace: it has no budget. */
static void account_budget(sc_engine *e, int64_t mix_ns, uint32_t rendered)
{
    if (e->config.clock == SC_CLOCK_MANUAL)
        return;
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
}

uint32_t sc_cycle_run(sc_engine *e, const sc_wake *w, void *dst)
{
    int64_t fill = 0;
    uint32_t rendered;
    /* Read before the commands are applied: what was queued before the drain is in. */
    const int drain_asked = atomic_load_explicit(&e->drain_asked, memory_order_acquire);
    sc_mixer_apply_commands(e);
    sc_capture_run(e); /* recordings added by these commands get this cycle's frames */
    if (dst) {
        sc_mixer_render_period(e, dst);
        rendered = 1;
    } else {
        rendered = render_until_full(e, &fill);
    }
    publish_end(e, drain_asked);
    if (rendered == 0 && e->holding) {
        /* Nothing to do but wait for content: not a cycle of the clock (no trace, no
         * histogram, no budget). */
        atomic_store_explicit(&e->busy_since_ns, 0, memory_order_release);
        sc_count(&e->holds, 1);
        sc_telemetry_answer_snapshot(e);
        return 0;
    }
    if (atomic_load_explicit(&e->progress_watchers, memory_order_acquire) > 0) {
        uint64_t one = 1; /* someone waits for room: one nonblocking write per cycle */
        ssize_t ignored = write(e->progress_fd, &one, sizeof one);
        (void)ignored;
    }
    const int64_t done = sc_now_ns();
    const int64_t mix_ns = done - w->woke_ns;
    atomic_store_explicit(&e->busy_since_ns, 0, memory_order_release);
    account_budget(e, mix_ns, rendered);
    uint32_t flags = w->flags;
    if (flags & SC_TRACE_XRUN) {
        sc_count(&e->xruns, 1);
        sc_taint(e, SC_TAINT_XRUN);
    }
    if (atomic_load_explicit(&e->demoted, memory_order_relaxed))
        flags |= SC_TRACE_DEMOTED;
    if (!(flags & SC_TRACE_PIPE))
        sc_histogram_add(&e->telemetry.late, w->late_ns);
    sc_histogram_add(&e->telemetry.mix, mix_ns);
    sc_trace_record r = {
        .cycle = sc_read(&e->cycles),
        .wake_ns = w->woke_ns,
        .late_ns = w->late_ns,
        .mix_ns = mix_ns,
        .fill = fill < 0 ? 0 : (uint32_t)fill,
        .voices = e->active_voices,
        .flags = flags,
        .rendered = rendered,
    };
    sc_telemetry_record(&e->telemetry, &r);
    if (!dst)
        atomic_store_explicit(&e->fill_now, r.fill, memory_order_relaxed);
    sc_count(&e->cycles, 1);
    sc_telemetry_answer_snapshot(e);
    return rendered;
}

void sc_cycle_prefill(sc_engine *e)
{
    int64_t fill = 0;
    e->run_first_frame = e->voiced_until = sc_read(&e->frames);
    e->content_seen = 0;
    e->holding = 0;
    atomic_store_explicit(&e->voiced_frames, 0, memory_order_relaxed);
    atomic_store_explicit(&e->end_frame, -1, memory_order_relaxed);
    atomic_store_explicit(&e->drain_asked, 0, memory_order_release);
    sc_mixer_apply_commands(e);
    if (render_until_full(e, &fill) > 0)
        e->holding = 0; /* the mixer begins with its driver's wait: there is output */
    publish_end(e, 0);  /* what the voices filled is deliverable now */
    atomic_store_explicit(&e->fill_now, (uint32_t)(fill < 0 ? 0 : fill), memory_order_relaxed);
}
