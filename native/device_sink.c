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

void sc_device_sink_set_active(sc_device_sink *s, int32_t active)
{
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
        atomic_store_explicit(&s->last_dac_time, time_info->output_dac_time,
                              memory_order_relaxed);
        atomic_store_explicit(&s->last_current_time, time_info->current_time,
                              memory_order_relaxed);
    }
    sc_count(&s->callbacks, 1);
    if (status & (SC_PA_OUTPUT_UNDERFLOW | SC_PA_OUTPUT_OVERFLOW)) {
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
}
