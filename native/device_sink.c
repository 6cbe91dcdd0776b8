/*
 * device_sink.c: the PortAudio stream callback of the device sink, in C.
 *
 * PortAudio's audio thread calls sc_device_sink_callback() for every buffer it wants.  The
 * callback copies frames from the engine's output ring (the ring's single reader while the
 * sink is active), advances the ring, and each time a whole period of `blocksize` frames has
 * been taken calls sc_engine_period_consumed(), which wakes the mixer at once.  PortAudio may
 * ask for any frame count: the callback keeps its position inside the current period across
 * calls, so a request for half a period, or for three and a half, is served frame-exactly.
 * When the ring holds fewer frames than asked, the rest is zeros, the underrun is counted and
 * the mixer is woken with the underrun flag (an xrun in the engine's figures).
 *
 * Duplex (sc_device_sink_set_capture): the same callback writes the captured frames into the
 * capture ring (the mixer reads it), gaplessly: frames the ring has no room for are counted and
 * written as zeros once there is room, so input frame k is always at capture index k and a
 * recording stays aligned to the sample through an overflow.  Each callback is also logged
 * (output frame, input frame, PortAudio's ADC/DAC/current times): the relation of the two
 * directions' frame clocks, which round-trip measurements use.
 *
 * Realtime rules: no allocation, lock, log or Python; the only syscalls are the engine's futex
 * wake and one gettid() at the stream's first callback (to name the thread in the figures).
 * Counters have a single writer (the audio thread) and are read relaxed by Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"

#include "rt.h"

struct sc_device_sink {
    struct sc_engine *engine;
    sc_ring *ring;
    uint32_t blocksize;
    uint32_t frame_bytes;
    uint64_t position;          /* frames of the current period already taken */
    size_t map_bytes;
    _Atomic int32_t active;
    _Atomic int32_t finished;
    _Atomic int64_t callback_tid;
    _Atomic int64_t last_callback_ns;
    _Atomic double last_dac_time, last_current_time;
    sc_counter callbacks, frames, ring_frames, periods, underruns, underrun_frames;
    sc_counter partial_callbacks, output_underflows, output_overflows, priming, xruns,
        xrun_frames;
    sc_counter frames_min, frames_max;
    sc_histogram duration;     /* the callback's own time, ns */

    /* Frame clocks: absolute ring indices (set when activated, then the callback's own). */
    uint64_t output_index;     /* the output ring's read index */
    uint64_t input_index;      /* the capture ring's index of the next captured frame */
    sc_ring *capture;          /* NULL: output only */
    uint32_t capture_frame_bytes;
    uint64_t capture_gap;      /* callback-private: lost frames not yet written as zeros */
    int64_t first_offset_seen;
    sc_counter input_frames, input_lost_frames, input_overflows, input_overflow_flags,
        input_underflow_flags, io_offset_changes;
    _Atomic int64_t io_offset;
    _Atomic double last_adc_time;

    _Alignas(64) _Atomic uint64_t trace_written;
    sc_device_trace_record trace[SC_DEVICE_TRACE_SLOTS];
};

int sc_device_sink_create(sc_device_sink **out, struct sc_engine *engine, sc_ring *ring,
                          uint32_t blocksize)
{
    *out = NULL;
    if (engine == NULL || ring == NULL || blocksize == 0 ||
        blocksize > sc_ring_capacity(ring))
        return -EINVAL;
    size_t bytes = sc_page_round(sizeof(sc_device_sink));
    /* Prefaulted, and locked where the limit allows (the engine reports its own mlock). */
    sc_device_sink *s = sc_locked_map(bytes, 1, NULL);
    if (s == NULL)
        return -errno;
    s->engine = engine;
    s->ring = ring;
    s->blocksize = blocksize;
    s->frame_bytes = sc_ring_frame_bytes(ring);
    s->map_bytes = bytes;
    sc_histogram_reset(&s->duration);
    atomic_store_explicit(&s->frames_min, UINT64_MAX, memory_order_relaxed);
    *out = s;
    return 0;
}

void sc_device_sink_destroy(sc_device_sink *s)
{
    if (s != NULL)
        sc_locked_unmap(s, s->map_bytes);
}

int sc_device_sink_set_capture(sc_device_sink *s, sc_ring *capture)
{
    if (atomic_load_explicit(&s->active, memory_order_acquire))
        return -EINVAL;
    if (capture != NULL && (sc_ring_format(capture) != SC_FORMAT_F32 ||
                            sc_ring_capacity(capture) < s->blocksize))
        return -EINVAL;
    s->capture = capture;
    s->capture_frame_bytes = capture ? sc_ring_frame_bytes(capture) : 0;
    return 0;
}

void sc_device_sink_set_active(sc_device_sink *s, int32_t active)
{
    if (active && !atomic_load_explicit(&s->active, memory_order_relaxed)) {
        /* The callback is not reading either ring yet: take their indices as its clocks. */
        sc_ring_stats rs;
        sc_ring_get_stats(s->ring, &rs);
        s->output_index = rs.frames_read;
        if (s->capture != NULL) {
            sc_ring_get_stats(s->capture, &rs);
            s->input_index = rs.frames_written;
        }
        s->capture_gap = 0;
        s->first_offset_seen = 0;
    }
    atomic_store_explicit(&s->active, active ? 1 : 0, memory_order_release);
}

void sc_device_sink_finished(void *userdata)
{
    sc_device_sink *s = userdata;
    atomic_store_explicit(&s->finished, 1, memory_order_release);
}

/* Copy `frames` frames out of the ring into `dst`; returns the frames that came from it. */
static uint64_t take(sc_device_sink *s, char *dst, uint64_t frames)
{
    uint64_t done = 0;
    while (done < frames) {
        uint64_t want = s->blocksize - s->position;
        if (want > frames - done)
            want = frames - done;
        void *src = NULL;
        int64_t k = sc_ring_read_region(s->ring, want, &src);
        if (k > 0) {
            memcpy(dst + done * s->frame_bytes, src, (size_t)k * s->frame_bytes);
            sc_ring_read_advance(s->ring, (uint64_t)k);
            s->output_index += (uint64_t)k;
            done += (uint64_t)k;
            s->position += (uint64_t)k;
            if (s->position == s->blocksize) {
                s->position = 0;
                sc_count(&s->periods, 1);
                sc_engine_period_consumed(s->engine, 0);
            }
        }
        if (k < (int64_t)want)
            break; /* the ring is short (or broken: k < 0) */
    }
    return done;
}

/* The relation of the two frame clocks at this callback, and its log record. */
static void log_callback(sc_device_sink *s, int64_t t0, uint64_t n,
                         const sc_pa_time_info *time_info, unsigned long status)
{
    const int64_t offset = (int64_t)(s->input_index - s->output_index);
    if (s->capture != NULL) {
        if (s->first_offset_seen && offset != atomic_load_explicit(&s->io_offset,
                                                                    memory_order_relaxed))
            sc_count(&s->io_offset_changes, 1);
        s->first_offset_seen = 1;
        atomic_store_explicit(&s->io_offset, offset, memory_order_relaxed);
    }
    uint64_t w = atomic_load_explicit(&s->trace_written, memory_order_relaxed);
    sc_device_trace_record *r = &s->trace[w & (SC_DEVICE_TRACE_SLOTS - 1)];
    r->callback_ns = t0;
    r->output_frame = s->output_index;
    r->input_frame = s->capture != NULL ? s->input_index : 0;
    r->input_adc_time = time_info ? time_info->input_adc_time : 0.0;
    r->output_dac_time = time_info ? time_info->output_dac_time : 0.0;
    r->current_time = time_info ? time_info->current_time : 0.0;
    r->frames = (uint32_t)n;
    r->status = (uint32_t)status;
    atomic_store_explicit(&s->trace_written, w + 1, memory_order_release);
}

/* Hand the captured frames to the capture ring without ever losing their place. */
static void capture(sc_device_sink *s, const void *input, uint64_t n, unsigned long status)
{
    if (status & SC_PA_INPUT_OVERFLOW)
        sc_count(&s->input_overflow_flags, 1);
    if (status & SC_PA_INPUT_UNDERFLOW)
        sc_count(&s->input_underflow_flags, 1);
    const uint64_t gap_before = s->capture_gap;
    int64_t k = sc_ring_write_gapless(s->capture, input, n, &s->capture_gap);
    if (k < 0)
        return; /* a broken ring: the mixer sees it too */
    s->input_index += n;
    sc_count(&s->input_frames, n);
    if (s->capture_gap > gap_before || (uint64_t)k < n) {
        sc_count(&s->input_overflows, 1);
        sc_count(&s->input_lost_frames, n - (uint64_t)k);
        sc_engine_taint(s->engine, SC_TAINT_XRUN);
    }
}

int sc_device_sink_callback(const void *input, void *output, unsigned long frames,
                            const sc_pa_time_info *time_info, unsigned long status,
                            void *userdata)
{
    sc_device_sink *s = userdata;
    int64_t t0 = sc_now_ns();
    atomic_store_explicit(&s->last_callback_ns, t0, memory_order_relaxed);
    if (atomic_load_explicit(&s->callback_tid, memory_order_relaxed) == 0)
        atomic_store_explicit(&s->callback_tid, (int64_t)syscall(SYS_gettid),
                              memory_order_relaxed);
    if (time_info != NULL) {
        atomic_store_explicit(&s->last_adc_time, time_info->input_adc_time,
                              memory_order_relaxed);
        atomic_store_explicit(&s->last_dac_time, time_info->output_dac_time,
                              memory_order_relaxed);
        atomic_store_explicit(&s->last_current_time, time_info->current_time,
                              memory_order_relaxed);
    }
    sc_count(&s->callbacks, 1);
    if (status & (SC_PA_OUTPUT_UNDERFLOW | SC_PA_OUTPUT_OVERFLOW | SC_PA_INPUT_UNDERFLOW |
                  SC_PA_INPUT_OVERFLOW)) {
        sc_count(&s->xruns, 1);
        sc_count(&s->xrun_frames, frames);
        sc_engine_taint(s->engine, SC_TAINT_XRUN); /* the server's xrun: the run is not clean */
    }
    if (status & SC_PA_OUTPUT_UNDERFLOW)
        sc_count(&s->output_underflows, 1);
    if (status & SC_PA_OUTPUT_OVERFLOW)
        sc_count(&s->output_overflows, 1);
    if (status & SC_PA_PRIMING_OUTPUT)
        sc_count(&s->priming, 1);

    char *dst = output;
    const uint64_t n = frames;
    if (!atomic_load_explicit(&s->active, memory_order_acquire)) {
        memset(dst, 0, (size_t)n * s->frame_bytes);
        return SC_PA_CONTINUE;
    }
    if (n != s->blocksize)
        sc_count(&s->partial_callbacks, 1);
    if (n < sc_read(&s->frames_min))
        atomic_store_explicit(&s->frames_min, n, memory_order_relaxed);
    if (n > sc_read(&s->frames_max))
        atomic_store_explicit(&s->frames_max, n, memory_order_relaxed);

    log_callback(s, t0, n, time_info, status);
    if (s->capture != NULL && input != NULL)
        capture(s, input, n, status);
    uint64_t got = take(s, dst, n);
    sc_count(&s->frames, n);
    sc_count(&s->ring_frames, got);
    if (got < n) {
        memset(dst + got * s->frame_bytes, 0, (size_t)(n - got) * s->frame_bytes);
        sc_count(&s->underruns, 1);
        sc_count(&s->underrun_frames, n - got);
        sc_engine_period_consumed(s->engine, 1); /* wake the mixer; counted as an xrun */
    }

    sc_histogram_add(&s->duration, sc_now_ns() - t0);
    return SC_PA_CONTINUE;
}

void sc_device_sink_get_stats(const sc_device_sink *cs, sc_device_sink_stats *out)
{
    sc_device_sink *s = (sc_device_sink *)cs;
    memset(out, 0, sizeof(*out));
    out->callbacks = sc_read(&s->callbacks);
    out->frames = sc_read(&s->frames);
    out->ring_frames = sc_read(&s->ring_frames);
    out->periods = sc_read(&s->periods);
    out->underruns = sc_read(&s->underruns);
    out->underrun_frames = sc_read(&s->underrun_frames);
    out->partial_callbacks = sc_read(&s->partial_callbacks);
    out->output_underflows = sc_read(&s->output_underflows);
    out->output_overflows = sc_read(&s->output_overflows);
    out->priming = sc_read(&s->priming);
    out->xruns = sc_read(&s->xruns);
    out->xrun_frames = sc_read(&s->xrun_frames);
    uint64_t fmin = sc_read(&s->frames_min);
    out->frames_min = fmin == UINT64_MAX ? 0 : fmin;
    out->frames_max = sc_read(&s->frames_max);
    _Static_assert(SC_HIST_BUCKETS_SINK == SC_RT_HIST_BUCKETS, "one histogram rule");
    uint64_t n;
    sc_histogram_read(&s->duration, &n, &out->duration_min, &out->duration_max,
                      &out->duration_sum, out->duration_hist);
    out->last_callback_ns = atomic_load_explicit(&s->last_callback_ns, memory_order_relaxed);
    out->last_output_dac_time = atomic_load_explicit(&s->last_dac_time, memory_order_relaxed);
    out->last_current_time = atomic_load_explicit(&s->last_current_time, memory_order_relaxed);
    out->callback_tid = atomic_load_explicit(&s->callback_tid, memory_order_relaxed);
    out->active = atomic_load_explicit(&s->active, memory_order_acquire);
    out->finished = atomic_load_explicit(&s->finished, memory_order_acquire);
    out->input_frames = sc_read(&s->input_frames);
    out->input_lost_frames = sc_read(&s->input_lost_frames);
    out->input_overflows = sc_read(&s->input_overflows);
    out->input_overflow_flags = sc_read(&s->input_overflow_flags);
    out->input_underflow_flags = sc_read(&s->input_underflow_flags);
    out->io_offset = atomic_load_explicit(&s->io_offset, memory_order_relaxed);
    out->io_offset_changes = sc_read(&s->io_offset_changes);
    out->last_input_adc_time = atomic_load_explicit(&s->last_adc_time, memory_order_relaxed);
}

int64_t sc_device_sink_trace(const sc_device_sink *s, sc_device_trace_record *out, uint64_t max)
{
    return sc_overwrite_log_copy(s->trace, sizeof *out, SC_DEVICE_TRACE_SLOTS,
                                 &s->trace_written, out, max);
}
