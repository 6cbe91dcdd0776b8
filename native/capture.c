/*
 * capture.c: the cycle's input step.  A duplex device sink's callback writes every captured
 * frame into the capture ring, gaplessly (frames it had no room for become zeros in their
 * place), so capture index k is input frame k.  Here, at the start of each cycle and in the
 * mixer thread, the frames captured since the last cycle are handed on:
 *   - to every recording (an SC_VOICE_RECORD voice: `data` is its buffer, `start_frame` its
 *     first input frame, `frames` its length): the part of the frames inside its span is
 *     copied to the same place in its buffer, and a recording whose span has gone by is
 *     handed back finished;
 *   - to the tap (the application's input ring) while it is armed, gaplessly too: a reader
 *     that falls behind loses frames, counted, and never its place.
 * Frames the capture lost show as a grown `overruns` count of the capture ring: counted as an
 * input gap, and on each recording active then (its `underruns`).
 *
 * Realtime rules as for the mixer: copies, atomics and the locked rings only.
 */
#define _GNU_SOURCE
#include <math.h>
#include <string.h>

#include "engine_internal.h"

/* Copy what of [first, first + k) falls in the recording's span; 1 once the span is over. */
static int record(sc_voice *v, uint64_t first, const float *src, uint64_t k, uint32_t channels)
{
    const uint64_t begin = (uint64_t)v->start_frame, end = begin + v->frames;
    const uint64_t lo = first > begin ? first : begin;
    const uint64_t hi = first + k < end ? first + k : end;
    if (lo < hi) {
        memcpy((float *)v->data + (lo - begin) * channels, src + (lo - first) * channels,
               (size_t)(hi - lo) * channels * sizeof(float));
        sc_count(&v->frames_played, hi - lo);
        v->phase = SC_PHASE_PLAYING;
    }
    return first + k >= end;
}

static void feed_tap(sc_engine *e, const float *src, uint64_t k)
{
    if (!atomic_load_explicit(&e->tap_armed, memory_order_acquire))
        return;
    const uint32_t arming = atomic_load_explicit(&e->tap_arming, memory_order_acquire);
    if (arming != e->tap_arming_seen) { /* a new arming: what was lost before is not owed */
        e->tap_arming_seen = arming;
        e->tap_gap = 0;
        sc_ring_stats rs;
        sc_ring_get_stats(e->tap, &rs);
        const uint64_t first = atomic_load_explicit(&e->input_frame, memory_order_relaxed);
        atomic_store_explicit(&e->tap_origin, (int64_t)(first - rs.frames_written),
                              memory_order_release);
    }
    const uint64_t gap_before = e->tap_gap;
    int64_t put = sc_ring_write_gapless(e->tap, src, k, &e->tap_gap);
    if (put < 0)
        return; /* broken by its reader's process: nothing more to give it */
    sc_count(&e->tap_frames, k);
    if ((uint64_t)put < k || e->tap_gap > gap_before) {
        sc_count(&e->tap_overflows, 1);
        sc_count(&e->tap_lost_frames, k - (uint64_t)put);
        sc_taint(e, SC_TAINT_XRUN);
    }
}

/* Input monitoring: each monitor voice (a stream voice) gets the frames, its channels taken
 * from the input channels its map names; the mixer then plays them like any stream. */
static void feed_monitors(sc_engine *e, const float *src, uint64_t k, uint32_t channels)
{
    uint32_t left = e->active_monitors;
    for (uint32_t s = 0; s < SC_MAX_VOICES && left; s++) {
        sc_voice *v = &e->voices[s];
        if (v->phase == SC_PHASE_FREE || !v->monitor)
            continue;
        left--;
        void *region = NULL;
        int64_t room = sc_ring_write_region(v->ring, k, &region);
        if (room <= 0) {
            if (room == 0)
                sc_count(&e->monitor_dropped, k);
            continue;
        }
        float *dst = region;
        const uint32_t vc = v->channels;
        for (int64_t i = 0; i < room; i++)
            for (uint32_t c = 0; c < vc; c++) {
                uint32_t from = v->input_map[c];
                dst[(size_t)i * vc + c] = from < channels ? src[(size_t)i * channels + from] : 0.0f;
            }
        sc_ring_write_advance(v->ring, (uint64_t)room);
        if ((uint64_t)room < k)
            sc_count(&e->monitor_dropped, k - (uint64_t)room);
    }
}

/* Raise each channel's peak meter to the largest |sample| of these frames. */
static void meter(sc_engine *e, const float *src, uint64_t k, uint32_t channels)
{
    float peak[SC_MAX_CHANNELS] = {0};
    for (uint64_t i = 0; i < k; i++)
        for (uint32_t c = 0; c < channels; c++) {
            const float v = fabsf(src[i * channels + c]);
            peak[c] = v > peak[c] ? v : peak[c]; /* NaN never raises it */
        }
    for (uint32_t c = 0; c < channels; c++) {
        uint32_t bits;
        memcpy(&bits, &peak[c], sizeof bits);
        /* |x| as IEEE bits orders like the floats: an atomic max on the bits */
        uint32_t old = atomic_load_explicit(&e->input_peak[c], memory_order_relaxed);
        while (bits > old && !atomic_compare_exchange_weak_explicit(
                   &e->input_peak[c], &old, bits, memory_order_relaxed, memory_order_relaxed))
            ;
    }
}

void sc_capture_run(sc_engine *e)
{
    sc_ring *cap = e->capture;
    if (cap == NULL)
        return;
    sc_ring_stats rs;
    sc_ring_get_stats(cap, &rs);
    const bool gap = rs.overruns != e->capture_lost_seen;
    e->capture_lost_seen = rs.overruns;
    if (gap)
        sc_count(&e->input_gaps, 1);
    const int64_t avail = sc_ring_readable(cap);
    if (avail <= 0)
        return;
    void *region = NULL;
    const int64_t k = sc_ring_read_region(cap, (uint64_t)avail, &region);
    if (k <= 0)
        return;
    const float *src = region;
    const uint32_t channels = sc_ring_channels(cap);
    const uint64_t first = atomic_load_explicit(&e->input_frame, memory_order_relaxed);
    meter(e, src, (uint64_t)k, channels);
    uint32_t left = e->active_recordings;
    for (uint32_t s = 0; s < SC_MAX_VOICES && left; s++) {
        sc_voice *v = &e->voices[s];
        if (v->phase == SC_PHASE_FREE || v->kind != SC_VOICE_RECORD)
            continue;
        left--;
        if (gap && v->phase == SC_PHASE_PLAYING)
            sc_count(&v->underruns, 1);
        if (record(v, first, src, (uint64_t)k, channels))
            sc_mixer_hand_back(e, v, s, SC_END_FINISHED);
    }
    if (e->active_monitors)
        feed_monitors(e, src, (uint64_t)k, channels);
    if (e->tap != NULL)
        feed_tap(e, src, (uint64_t)k);
    sc_ring_read_advance(cap, (uint64_t)k);
    atomic_store_explicit(&e->input_frame, first + (uint64_t)k, memory_order_release);
}
