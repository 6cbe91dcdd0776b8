/*
 * telemetry.c: per-cycle trace records and log2 histograms, written by the mixer thread only
 * and read live by Python.
 *
 * The trace is an overwrite ring: the mixer never waits for a reader.  It writes a record,
 * then publishes the count with a release store; a reader copies the newest records and then
 * re-reads the count to drop any that the mixer may have overwritten during the copy
 * (sc_engine_trace), so a reader never returns a torn record.
 */
#define _GNU_SOURCE
#include <string.h>

#include "engine_internal.h"

_Static_assert(SC_RT_HIST_BUCKETS == SC_HIST_BUCKETS, "one histogram rule");

void sc_telemetry_reset(sc_telemetry *t)
{
    sc_histogram_reset(&t->late);
    sc_histogram_reset(&t->mix);
    atomic_store_explicit(&t->written, 0, memory_order_relaxed);
}

void sc_telemetry_record(sc_telemetry *t, const sc_trace_record *r)
{
    uint64_t w = atomic_load_explicit(&t->written, memory_order_relaxed);
    t->records[w & (SC_TRACE_SLOTS - 1)] = *r;
    atomic_store_explicit(&t->written, w + 1, memory_order_release);
}

int64_t sc_engine_trace(const sc_engine *e, sc_trace_record *out, uint64_t max)
{
    return sc_overwrite_log_copy(e->telemetry.records, sizeof *out, SC_TRACE_SLOTS,
                                 &e->telemetry.written, out, max);
}

void sc_engine_get_stats(const sc_engine *e, sc_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    out->cycles = sc_read(&e->cycles);
    out->periods = sc_read(&e->periods);
    out->consumed = sc_read(&e->consumed);
    out->skipped = sc_read(&e->skipped);
    out->xruns = sc_read(&e->xruns);
    out->frames = sc_read(&e->frames);
    out->clipped = sc_read(&e->clipped);
    out->nonfinite = sc_read(&e->nonfinite);
    out->underruns = sc_read(&e->underruns);
    out->late_starts = sc_read(&e->late_starts);
    out->commands = sc_read(&e->commands_done);
    out->overruns = sc_read(&e->overruns);
    out->sigxcpu = sc_read(&e->sigxcpu);
    out->demotions = sc_read(&e->demotions);
    out->realtime_losses = sc_read(&e->realtime_losses);
    out->start_ns = e->start_ns;
    uint64_t count; /* Python counts the buckets */
    sc_histogram_read(&e->telemetry.late, &count, &out->late_min, &out->late_max,
                      &out->late_sum, out->late_hist);
    sc_histogram_read(&e->telemetry.mix, &count, &out->mix_min, &out->mix_max, &out->mix_sum,
                      out->mix_hist);
    out->voices = atomic_load_explicit((_Atomic uint32_t *)&e->voices_now, memory_order_relaxed);
    out->taints = atomic_load_explicit((_Atomic uint32_t *)&e->taints, memory_order_relaxed);
    out->fill = atomic_load_explicit((_Atomic uint32_t *)&e->fill_now, memory_order_relaxed);
    /* Running: started and not stopped, and the mixer has not left its loop on its own. */
    out->running = atomic_load_explicit((_Atomic int32_t *)&e->running, memory_order_relaxed) &&
                   !atomic_load_explicit((_Atomic int32_t *)&e->mixer_done, memory_order_relaxed);
    out->mixer_tid = sc_rt_thread_tid(&e->mixer);
    out->watchdog_tid = sc_rt_thread_tid(&e->watchdog);
    out->canary_tid = sc_rt_thread_tid(&e->canary);
    out->output_nonfinite = sc_read(&e->output_fixed);
    out->driver_error = atomic_load_explicit((_Atomic int32_t *)&e->driver_error,
                                             memory_order_acquire);
    out->mixer_done = atomic_load_explicit((_Atomic int32_t *)&e->mixer_done,
                                           memory_order_acquire);
    out->run_frames = sc_read(&e->frames) - e->run_first_frame;
    out->voiced_frames = atomic_load_explicit((_Atomic uint64_t *)&e->voiced_frames,
                                              memory_order_relaxed);
    out->end_frame = atomic_load_explicit((_Atomic int64_t *)&e->end_frame, memory_order_acquire);
    out->holds = sc_read(&e->holds);
    out->input_frames = sc_engine_input_frame(e);
    out->input_gaps = sc_read(&e->input_gaps);
    out->tap_frames = sc_read(&e->tap_frames);
    out->tap_overflows = sc_read(&e->tap_overflows);
    out->tap_lost_frames = sc_read(&e->tap_lost_frames);
    out->monitor_dropped = sc_read(&e->monitor_dropped);
    out->recordings = atomic_load_explicit((_Atomic uint32_t *)&e->recordings_now,
                                           memory_order_relaxed);
    out->tap_armed = atomic_load_explicit((_Atomic int32_t *)&e->tap_armed,
                                          memory_order_relaxed);
    out->tap_origin = atomic_load_explicit((_Atomic int64_t *)&e->tap_origin,
                                           memory_order_acquire);
}

void sc_telemetry_answer_snapshot(sc_engine *e)
{
    uint32_t wanted = e->snapshot_wanted;
    if (wanted == atomic_load_explicit(&e->snapshot_token, memory_order_relaxed))
        return;
    sc_engine_get_stats(e, &e->snapshot); /* plain copies into locked memory: RT-safe */
    atomic_store_explicit(&e->snapshot_token, wanted, memory_order_release);
}

uint32_t sc_engine_get_snapshot(const sc_engine *e, sc_engine_stats *out)
{
    uint32_t token = atomic_load_explicit((_Atomic uint32_t *)&e->snapshot_token,
                                          memory_order_acquire);
    *out = e->snapshot;
    return token;
}
