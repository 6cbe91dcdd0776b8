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
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"

typedef _Atomic uint64_t counter;

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
    counter callbacks, frames, ring_frames, periods, underruns, underrun_frames;
    counter partial_callbacks, output_underflows, output_overflows, priming, xruns;
    counter frames_min, frames_max;
    _Atomic int64_t duration_min, duration_max, duration_sum;
    counter duration_hist[SC_HIST_BUCKETS_SINK];
};

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the vDSO: no syscall */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Single writer: load + store, no read-modify-write. */
static inline void bump(counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t get(const counter *c)
{
    return atomic_load_explicit((counter *)c, memory_order_relaxed);
}

static inline unsigned bucket_of(int64_t ns)
{
    if (ns <= 1)
        return 0;
    unsigned b = 63u - (unsigned)__builtin_clzll((uint64_t)ns);
    return b < SC_HIST_BUCKETS_SINK ? b : SC_HIST_BUCKETS_SINK - 1;
}

int sc_device_sink_create(sc_device_sink **out, struct sc_engine *engine, sc_ring *ring,
                          uint32_t blocksize)
{
    *out = NULL;
    if (engine == NULL || ring == NULL || blocksize == 0 ||
        blocksize > sc_ring_capacity(ring))
        return -EINVAL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (sizeof(sc_device_sink) + page - 1) / page * page;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    memset(p, 0, bytes); /* prefault: the callback never touches a fresh page */
    (void)mlock(p, bytes); /* best effort: the engine reports memory locking as a taint */
    sc_device_sink *s = p;
    s->engine = engine;
    s->ring = ring;
    s->blocksize = blocksize;
    s->frame_bytes = sc_ring_frame_bytes(ring);
    s->map_bytes = bytes;
    atomic_store_explicit(&s->duration_min, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&s->frames_min, UINT64_MAX, memory_order_relaxed);
    *out = s;
    return 0;
}

void sc_device_sink_destroy(sc_device_sink *s)
{
    if (s != NULL)
        munmap(s, s->map_bytes);
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
                bump(&s->periods, 1);
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
    int64_t t0 = now_ns();
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
    bump(&s->callbacks, 1);
    if (status & (SC_PA_OUTPUT_UNDERFLOW | SC_PA_OUTPUT_OVERFLOW))
        bump(&s->xruns, 1);
    if (status & SC_PA_OUTPUT_UNDERFLOW)
        bump(&s->output_underflows, 1);
    if (status & SC_PA_OUTPUT_OVERFLOW)
        bump(&s->output_overflows, 1);
    if (status & SC_PA_PRIMING_OUTPUT)
        bump(&s->priming, 1);

    char *dst = output;
    const uint64_t n = frames;
    if (!atomic_load_explicit(&s->active, memory_order_acquire)) {
        memset(dst, 0, (size_t)n * s->frame_bytes);
        return SC_PA_CONTINUE;
    }
    if (n != s->blocksize)
        bump(&s->partial_callbacks, 1);
    if (n < get(&s->frames_min))
        atomic_store_explicit(&s->frames_min, n, memory_order_relaxed);
    if (n > get(&s->frames_max))
        atomic_store_explicit(&s->frames_max, n, memory_order_relaxed);

    uint64_t got = take(s, dst, n);
    bump(&s->frames, n);
    bump(&s->ring_frames, got);
    if (got < n) {
        memset(dst + got * s->frame_bytes, 0, (size_t)(n - got) * s->frame_bytes);
        bump(&s->underruns, 1);
        bump(&s->underrun_frames, n - got);
        sc_engine_period_consumed(s->engine, 1); /* wake the mixer; counted as an xrun */
    }

    int64_t d = now_ns() - t0;
    atomic_store_explicit(&s->duration_sum,
                          atomic_load_explicit(&s->duration_sum, memory_order_relaxed) + d,
                          memory_order_relaxed);
    if (d < atomic_load_explicit(&s->duration_min, memory_order_relaxed))
        atomic_store_explicit(&s->duration_min, d, memory_order_relaxed);
    if (d > atomic_load_explicit(&s->duration_max, memory_order_relaxed))
        atomic_store_explicit(&s->duration_max, d, memory_order_relaxed);
    bump(&s->duration_hist[bucket_of(d)], 1);
    return SC_PA_CONTINUE;
}

void sc_device_sink_get_stats(const sc_device_sink *cs, sc_device_sink_stats *out)
{
    sc_device_sink *s = (sc_device_sink *)cs;
    memset(out, 0, sizeof(*out));
    out->callbacks = get(&s->callbacks);
    out->frames = get(&s->frames);
    out->ring_frames = get(&s->ring_frames);
    out->periods = get(&s->periods);
    out->underruns = get(&s->underruns);
    out->underrun_frames = get(&s->underrun_frames);
    out->partial_callbacks = get(&s->partial_callbacks);
    out->output_underflows = get(&s->output_underflows);
    out->output_overflows = get(&s->output_overflows);
    out->priming = get(&s->priming);
    out->xruns = get(&s->xruns);
    uint64_t fmin = get(&s->frames_min);
    out->frames_min = fmin == UINT64_MAX ? 0 : fmin;
    out->frames_max = get(&s->frames_max);
    int64_t dmin = atomic_load_explicit(&s->duration_min, memory_order_relaxed);
    out->duration_min = dmin == INT64_MAX ? 0 : dmin;
    out->duration_max = atomic_load_explicit(&s->duration_max, memory_order_relaxed);
    out->duration_sum = atomic_load_explicit(&s->duration_sum, memory_order_relaxed);
    for (unsigned b = 0; b < SC_HIST_BUCKETS_SINK; b++)
        out->duration_hist[b] = get(&s->duration_hist[b]);
    out->last_callback_ns = atomic_load_explicit(&s->last_callback_ns, memory_order_relaxed);
    out->last_output_dac_time = atomic_load_explicit(&s->last_dac_time, memory_order_relaxed);
    out->last_current_time = atomic_load_explicit(&s->last_current_time, memory_order_relaxed);
    out->callback_tid = atomic_load_explicit(&s->callback_tid, memory_order_relaxed);
    out->active = atomic_load_explicit(&s->active, memory_order_acquire);
    out->finished = atomic_load_explicit(&s->finished, memory_order_acquire);
}
