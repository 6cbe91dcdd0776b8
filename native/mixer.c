/*
 * mixer.c: the mix kernel.  Applies queued commands, mixes every active voice into a float32
 * period, converts it to the output format, and hands finished voices back.  A float32 output
 * is mixed in place, straight into the output ring's period (no scratch buffer, no copy); a
 * period with no voice is a memset.  The loops are written so that the compiler vectorises them
 * (-O3): the finiteness and clip checks are branch-free reductions.
 *
 * Runs in the mixer thread (or in the caller for the manual clock): no allocation, no lock,
 * no logging, and no syscall but one: while Python watches voice ends, a voice handed back
 * writes the engine's end eventfd (nonblocking) once.  Problems are counted and left for the watchdog and Python.
 *
 * Pan law (documented in streamcore/voice.py too):
 *   - a voice with the engine's channel count, on a stereo engine: balance.  pan <= 0 keeps
 *     the left channel at `gain` and scales the right by (1 + pan); pan >= 0 the reverse.
 *     At pan 0 both gains are exactly `gain`, so gain 1.0 passes samples through bit-exact.
 *   - a mono voice on a stereo engine: constant power, L = gain*cos(θ), R = gain*sin(θ) with
 *     θ = (pan + 1)·π/4 (-3 dB each at the centre).
 *   - any other layout (mono engine, or more than two channels): every channel gets `gain`;
 *     pan must be 0 (Python checks).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "engine_internal.h"

static void compute_gains(const sc_engine *e, const sc_voice *v, float *out)
{
    uint32_t ch = e->config.channels;
    float g = v->gain, p = v->pan;
    for (uint32_t c = 0; c < ch; c++)
        out[c] = g;
    if (ch != 2 || v->mapped) /* a mapped voice: `gain` on each channel it reaches, no pan */
        return;
    if (v->channels == 2) {
        if (p > 0.0f)
            out[0] = g * (1.0f - p);
        else if (p < 0.0f)
            out[1] = g * (1.0f + p);
    } else {
        float theta = (p + 1.0f) * (float)M_PI_4;
        out[0] = g * cosf(theta);
        out[1] = g * sinf(theta);
    }
}

void sc_mixer_hand_back(sc_engine *e, sc_voice *v, uint32_t slot, uint32_t reason)
{
    /* Everything the voice points at (its ring, its recording buffer) belongs to Python again
     * from the moment the return is published: Python may reap it at once and unmap the ring.
     * So the ring is woken and the voice cleared first, and the return published last. */
    int64_t i = sc_spsc_reserve(&e->returns, SC_MAX_VOICES);
    if (i >= 0) { /* always true: one return per ADD, and a slot is reused only after */
        sc_voice_return *r = &e->return_slots[i];
        r->slot = slot;
        r->generation = v->generation;
        r->reason = reason;
        r->pad = 0;
        r->frames_played = sc_read(&v->frames_played);
        r->underruns = sc_read(&v->underruns);
        r->underrun_frames = sc_read(&v->underrun_frames);
        r->nonfinite = sc_read(&v->nonfinite);
        r->start_frame = v->start_frame;
    }
    if (v->kind == SC_VOICE_RECORD)
        e->active_recordings--;
    if (v->monitor)
        e->active_monitors--;
    v->monitor = 0;
    /* release, before the wake: a producer woken by it finds the end (sc_engine_voice_ended) */
    atomic_store_explicit(&v->ended_generation, v->generation, memory_order_release);
    if (v->ring != NULL)
        sc_ring_wake(v->ring); /* a producer blocked on its ring looks again: the voice ended */
    v->phase = SC_PHASE_FREE;
    v->data = NULL;
    v->ring = NULL;
    atomic_store_explicit(&v->active, 0, memory_order_release);
    e->active_voices--;
    if (i >= 0) {
        sc_spsc_publish(&e->returns);
        if (atomic_load_explicit(&e->end_watched, memory_order_acquire)) {
            uint64_t one = 1; /* nonblocking eventfd: one syscall per voice end, watched only */
            ssize_t ignored = write(e->end_fd, &one, sizeof one);
            (void)ignored;
        }
    }
}

/* SC_LATE_SKIP: drop the `due` frames that should already have played and start now, as if
 * the voice had started in time (its fade-in counted as played). */
static void skip_due(sc_engine *e, sc_voice *v, uint32_t slot, uint64_t due, uint64_t now)
{
    v->start_frame = (int64_t)now;
    v->since_start = due;
    if (v->kind == SC_VOICE_STREAM) {
        /* What is queued goes now; what is due but not written yet goes as it arrives. */
        int64_t have = sc_ring_readable(v->ring);
        uint64_t drop = have > 0 ? ((uint64_t)have < due ? (uint64_t)have : due) : 0;
        if (drop)
            sc_ring_read_advance(v->ring, drop);
        v->skip_left = due - drop;
        return;
    }
    if (v->loop && v->frames > 0) {
        v->position = due % v->frames;
    } else if (due >= v->frames) {
        sc_mixer_hand_back(e, v, slot, SC_END_FINISHED); /* all of it is in the past */
    } else {
        v->position = due;
    }
}

static void apply(sc_engine *e, const sc_command *cmd)
{
    if (cmd->op == SC_CMD_SNAPSHOT) {
        e->snapshot_wanted = cmd->generation;
        return;
    }
    if (cmd->slot >= SC_MAX_VOICES)
        return;
    sc_voice *v = &e->voices[cmd->slot];
    if (cmd->op == SC_CMD_ADD) {
        if (v->phase != SC_PHASE_FREE)
            return; /* Python never does this: the slot is still ours */
        v->generation = cmd->generation;
        v->kind = cmd->kind;
        v->channels = cmd->channels;
        v->loop = cmd->loop;
        v->data = cmd->data;
        v->frames = cmd->frames;
        v->ring = cmd->ring;
        v->position = 0;
        v->skip_left = 0;
        v->primed = 0;
        v->finishing = 0;
        v->monitor = cmd->kind == SC_VOICE_STREAM && cmd->monitor && e->capture != NULL;
        if (v->monitor) {
            memcpy(v->input_map, cmd->input_map, sizeof v->input_map);
            e->active_monitors++;
        }
        v->mapped = 0;
        if (cmd->mapped && cmd->kind != SC_VOICE_RECORD && cmd->channels <= e->config.channels) {
            /* Python checked the map; an entry out of range is still never written through */
            bool valid = true;
            for (uint32_t c = 0; c < cmd->channels; c++)
                valid = valid && cmd->output_map[c] < e->config.channels;
            v->mapped = valid;
            memcpy(v->output_map, cmd->output_map, sizeof v->output_map);
        }
        const bool recording = cmd->kind == SC_VOICE_RECORD;
        /* A recording's start is an input frame: the next one to be distributed, or later. */
        uint64_t now = recording ? atomic_load_explicit(&e->input_frame, memory_order_relaxed)
                                 : sc_read(&e->frames);
        bool late = false;
        if (cmd->start_frame < 0) {
            v->start_frame = (int64_t)now;
        } else {
            v->start_frame = cmd->start_frame;
            late = (uint64_t)cmd->start_frame < now;
            if (late && !recording)
                sc_count(&e->late_starts, 1);
        }
        v->fade_in_frames = cmd->fade_frames;
        v->since_start = 0;
        v->fade_total = v->fade_left = 0;
        v->stop_at = v->set_at = -1;
        v->gain = cmd->gain;
        v->pan = cmd->pan;
        compute_gains(e, v, v->target);
        memcpy(v->current, v->target, sizeof v->current);
        atomic_store_explicit(&v->frames_played, 0, memory_order_relaxed);
        atomic_store_explicit(&v->underruns, 0, memory_order_relaxed);
        atomic_store_explicit(&v->underrun_frames, 0, memory_order_relaxed);
        atomic_store_explicit(&v->nonfinite, 0, memory_order_relaxed);
        atomic_store_explicit(&v->live_start, v->start_frame, memory_order_relaxed);
        atomic_store_explicit(&v->live_generation, cmd->generation, memory_order_relaxed);
        atomic_store_explicit(&v->active, 1, memory_order_release);
        v->phase = SC_PHASE_WAITING;
        e->active_voices++;
        if (recording) {
            e->active_recordings++;
            if (late || e->capture == NULL) /* its first frame is gone, or nothing captures */
                sc_mixer_hand_back(e, v, cmd->slot, SC_END_LATE);
        } else if (late && cmd->late == SC_LATE_REFUSE) {
            sc_mixer_hand_back(e, v, cmd->slot, SC_END_LATE);
        } else if (late && cmd->late == SC_LATE_SKIP) {
            skip_due(e, v, cmd->slot, now - (uint64_t)cmd->start_frame, now);
        }
        return;
    }
    if (v->phase == SC_PHASE_FREE || v->generation != cmd->generation)
        return; /* already finished: a stale command */
    if (cmd->op == SC_CMD_SET && cmd->start_frame > (int64_t)sc_read(&e->frames) &&
        !(v->phase == SC_PHASE_WAITING && cmd->start_frame <= v->start_frame)) {
        /* A frame of a period still to render: mix_voice changes the gains exactly there. */
        v->set_at = cmd->start_frame;
        v->set_gain = cmd->gain;
        v->set_pan = cmd->pan;
    } else if (cmd->op == SC_CMD_SET) {
        v->gain = cmd->gain;
        v->pan = cmd->pan;
        compute_gains(e, v, v->target);
        if (v->phase == SC_PHASE_WAITING)
            memcpy(v->current, v->target, sizeof v->current);
    } else if (cmd->op == SC_CMD_FINISH) {
        if (v->kind == SC_VOICE_STREAM)
            v->finishing = 1;
    } else if (cmd->op == SC_CMD_STOP) {
        if (v->phase == SC_PHASE_FADING && v->fade_left <= cmd->fade_frames)
            return; /* already fading out at least as fast */
        const int64_t next = (int64_t)sc_read(&e->frames);
        if (cmd->start_frame > next && v->kind != SC_VOICE_RECORD &&
            !(v->phase == SC_PHASE_WAITING && cmd->start_frame <= v->start_frame)) {
            /* A frame of a period still to render: mix_voice stops it exactly there. */
            v->stop_at = cmd->start_frame;
            v->stop_fade = cmd->fade_frames;
            return;
        }
        if (v->phase == SC_PHASE_WAITING || cmd->fade_frames == 0 ||
            v->kind == SC_VOICE_RECORD) {
            sc_mixer_hand_back(e, v, cmd->slot, SC_END_STOPPED);
            return;
        }
        v->phase = SC_PHASE_FADING;
        v->fade_total = v->fade_left = cmd->fade_frames;
    }
}

void sc_mixer_apply_commands(sc_engine *e)
{
    int64_t i;
    while ((i = sc_spsc_peek(&e->commands, SC_COMMAND_SLOTS)) >= 0) {
        apply(e, &e->command_slots[i]);
        sc_spsc_consume(&e->commands);
        sc_count(&e->commands_done, 1);
    }
}

static bool all_finite(const float *src, size_t count)
{
    /* Exponent all ones: inf or nan.  No early exit, so the loop vectorises. */
    uint32_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return bad == 0;
}

/* Frame i of a segment: the fade-in and fade-out envelopes together (1 outside them). */
static inline float envelope(const sc_voice *v, uint32_t i, bool fade_in, bool fading)
{
    float env = 1.0f;
    uint64_t played = v->since_start + i;
    if (fade_in && played < v->fade_in_frames)
        env = (float)(played + 1) / (float)v->fade_in_frames;
    if (fading)
        env *= (float)(v->fade_left - 1 - i) / (float)v->fade_total;
    return env;
}

/* Add k source frames at block frame `at`, with the voice's gains, ramp and envelopes. */
static void add_segment(sc_engine *e, sc_voice *v, float *mix, const float *src, uint32_t at,
                        uint32_t k, bool ramp)
{
    const uint32_t ch = e->config.channels, n = e->config.blocksize;
    const uint32_t vch = v->channels;
    float *restrict out = mix + (size_t)at * ch;
    const bool fade_in = v->fade_in_frames > v->since_start;
    const bool fading = v->phase == SC_PHASE_FADING;

    if (v->mapped) { /* each voice channel onto its own output channel */
        for (uint32_t i = 0; i < k; i++) {
            const float env = envelope(v, i, fade_in, fading);
            float frac = (float)(at + i + 1) / (float)n;
            for (uint32_t c = 0; c < vch; c++) {
                const uint32_t o = v->output_map[c];
                float g = ramp ? v->current[o] + (v->target[o] - v->current[o]) * frac
                               : v->current[o];
                out[i * ch + o] += src[i * vch + c] * g * env;
            }
        }
        return;
    }
    if (!ramp && !fade_in && !fading) {
        /* Steady state: the common case, and the bit-exact one. */
        if (ch == 2) { /* stereo engine: fixed-stride loops the compiler can vectorise */
            const float g0 = v->current[0], g1 = v->current[1];
            if (vch == 2) {
                for (uint32_t i = 0; i < k; i++) {
                    out[2 * i] += src[2 * i] * g0;
                    out[2 * i + 1] += src[2 * i + 1] * g1;
                }
            } else {
                for (uint32_t i = 0; i < k; i++) {
                    out[2 * i] += src[i] * g0;
                    out[2 * i + 1] += src[i] * g1;
                }
            }
        } else if (vch == ch) {
            for (uint32_t i = 0; i < k; i++)
                for (uint32_t c = 0; c < ch; c++)
                    out[i * ch + c] += src[i * ch + c] * v->current[c];
        } else { /* mono voice */
            for (uint32_t i = 0; i < k; i++)
                for (uint32_t c = 0; c < ch; c++)
                    out[i * ch + c] += src[i] * v->current[c];
        }
        return;
    }
    for (uint32_t i = 0; i < k; i++) {
        const float env = envelope(v, i, fade_in, fading);
        float frac = (float)(at + i + 1) / (float)n;
        for (uint32_t c = 0; c < ch; c++) {
            float g = ramp ? v->current[c] + (v->target[c] - v->current[c]) * frac : v->current[c];
            float x = vch == ch ? src[i * ch + c] : src[i];
            out[i * ch + c] += x * g * env;
        }
    }
}

/* A contiguous run of source frames for this block: pointer and count (0 when none now). */
static uint32_t source_frames(sc_voice *v, uint32_t want, const float **src)
{
    if (v->kind == SC_VOICE_STREAM) {
        void *region = NULL;
        while (v->skip_left > 0) { /* late frames of a skipped start, written since */
            int64_t late = sc_ring_read_region(v->ring, v->skip_left, &region);
            if (late <= 0)
                return 0;
            sc_ring_read_advance(v->ring, (uint64_t)late);
            v->skip_left -= (uint64_t)late;
        }
        int64_t k = sc_ring_read_region(v->ring, want, &region);
        if (k <= 0)
            return 0; /* empty, or -EPIPE (broken): silence, counted as an underrun */
        *src = region;
        v->primed = 1;
        return (uint32_t)k;
    }
    if (v->position >= v->frames) {
        if (!v->loop)
            return 0;
        v->position = 0;
    }
    uint64_t left = v->frames - v->position;
    *src = v->data + v->position * v->channels;
    return left < want ? (uint32_t)left : want;
}

static void consume_source(sc_voice *v, uint32_t k)
{
    if (v->kind == SC_VOICE_STREAM)
        sc_ring_read_advance(v->ring, k);
    else
        v->position += k;
}

/* Play block frames [at, to) of one voice into `mix` (the block starts at output frame t0);
 * its end reason when it is finished, else 0. */
static uint32_t play_span(sc_engine *e, sc_voice *v, float *mix, uint64_t t0, uint32_t at,
                          uint32_t to)
{
    uint32_t want = to - at;
    if (v->phase == SC_PHASE_FADING && v->fade_left < want)
        want = (uint32_t)v->fade_left;
    const bool ramp = memcmp(v->current, v->target, sizeof(float) * e->config.channels) != 0;
    bool nonfinite = false;
    uint32_t done = 0;
    while (done < want) {
        const float *src = NULL;
        uint32_t k = source_frames(v, want - done, &src);
        if (k == 0)
            break;
        if (all_finite(src, (size_t)k * v->channels))
            add_segment(e, v, mix, src, at + done, k, ramp);
        else
            nonfinite = true;
        consume_source(v, k);
        done += k;
        v->since_start += k;
        if (v->phase == SC_PHASE_FADING)
            v->fade_left -= k;
    }
    if (v->phase == SC_PHASE_FADING && done < want)
        v->fade_left -= want - done; /* the fade is time: silence (an underrun) fades too */
    if (ramp)
        memcpy(v->current, v->target, sizeof(float) * e->config.channels);
    sc_count(&v->frames_played, done);
    if (done > 0 && t0 + at + done > e->voiced_until)
        e->voiced_until = t0 + at + done;
    if (nonfinite) {
        sc_count(&v->nonfinite, 1);
        sc_count(&e->nonfinite, 1);
    }
    if (v->phase == SC_PHASE_FADING && v->fade_left == 0)
        return SC_END_STOPPED;
    if (v->kind == SC_VOICE_BUFFER && !v->loop && v->position >= v->frames)
        return SC_END_FINISHED;
    if (done < want && v->kind == SC_VOICE_STREAM) {
        /* The writer's goodbye before the level: what it committed before leaving is seen. */
        const bool closed = sc_ring_writer_closed(v->ring);
        const int64_t left = sc_ring_readable(v->ring);
        /* Finished (or its writer left) and drained: its end.  A broken ring ends it too where
         * silence is not time (SC_CONTENT_ONLY): nothing will ever come, and waiting for it
         * would hold forever. */
        if (((v->finishing || closed) && left <= 0) ||
            (left < 0 && e->config.content == SC_CONTENT_ONLY))
            return SC_END_FINISHED;
    }
    if (done < want && v->kind == SC_VOICE_STREAM && v->primed) {
        sc_count(&v->underruns, 1);
        sc_count(&v->underrun_frames, want - done);
        sc_count(&e->underruns, 1);
        sc_taint(e, SC_TAINT_UNDERRUN);
    }
    return 0;
}

/* Mix one voice into `mix`, the block starting at output frame t0; its end reason when it is
 * finished, else 0.  A change or a stop asked for a frame of this block (Voice.set(at=),
 * Voice.stop(at=)) splits it there: the voice plays up to that frame as it was, then with
 * the new gains (a step, no ramp) or fading (or ending) from exactly that frame. */
static uint32_t mix_voice(sc_engine *e, sc_voice *v, float *mix, uint64_t t0)
{
    const uint32_t n = e->config.blocksize;
    const int64_t block_end = (int64_t)(t0 + n);
    uint32_t at = 0;
    if (v->kind == SC_VOICE_RECORD)
        return 0; /* no output: capture.c fills it */
    if (v->phase == SC_PHASE_WAITING) {
        if (v->start_frame >= block_end)
            return 0;
        if (v->start_frame > (int64_t)t0)
            at = (uint32_t)(v->start_frame - (int64_t)t0);
        v->phase = SC_PHASE_PLAYING;
    }
    for (;;) {
        const bool set_due = v->set_at >= 0 && v->set_at < block_end;
        const bool stop_due = v->stop_at >= 0 && v->stop_at < block_end;
        if (!set_due && !stop_due)
            return play_span(e, v, mix, t0, at, n);
        /* The earliest event first; a change before a stop on the same frame. */
        const bool set_first = set_due && (!stop_due || v->set_at <= v->stop_at);
        const int64_t event = set_first ? v->set_at : v->stop_at;
        const uint32_t cut = event - (int64_t)t0 < (int64_t)at ? at
                                                                : (uint32_t)(event - (int64_t)t0);
        if (cut > at) {
            uint32_t end = play_span(e, v, mix, t0, at, cut);
            if (end)
                return end;
            at = cut;
        }
        if (set_first) {
            v->set_at = -1;
            v->gain = v->set_gain;
            v->pan = v->set_pan;
            compute_gains(e, v, v->target);
            memcpy(v->current, v->target, sizeof v->current); /* exactly from this frame */
            continue;
        }
        v->stop_at = -1;
        if (v->stop_fade == 0)
            return SC_END_STOPPED;
        v->phase = SC_PHASE_FADING;
        v->fade_total = v->fade_left = v->stop_fade;
    }
}

bool sc_mixer_has_content(const sc_engine *e)
{
    if (e->active_voices == 0)
        return false;
    const uint32_t n = e->config.blocksize;
    const uint64_t t0 = sc_read(&e->frames);
    uint32_t left = e->active_voices;
    for (uint32_t s = 0; s < SC_MAX_VOICES && left; s++) {
        const sc_voice *v = &e->voices[s];
        if (v->phase == SC_PHASE_FREE)
            continue;
        left--;
        if (v->kind != SC_VOICE_STREAM || v->finishing)
            continue;
        uint64_t need = n;
        if (v->phase == SC_PHASE_WAITING) {
            if (v->start_frame >= (int64_t)(t0 + n))
                continue; /* starts after this period: silence until then is its timing */
            if (v->start_frame > (int64_t)t0)
                need = (uint64_t)((int64_t)(t0 + n) - v->start_frame);
        }
        if (v->phase == SC_PHASE_FADING && v->fade_left < need)
            need = v->fade_left;
        const int64_t have = sc_ring_readable(v->ring);
        if (have >= 0 && (uint64_t)have < need)
            return false; /* its producer is behind: wait for it, do not play silence */
    }
    return true;
}

/* Uniform in [0, 1): xorshift32, cheap and allocation-free. */
static inline float uniform(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

/* Samples of the float period `mix` beyond full scale. */
static uint64_t count_clipped(const float *mix, size_t count)
{
    uint32_t clipped = 0; /* count < 2^32: blocksize * channels is bounded */
    for (size_t i = 0; i < count; i++)
        clipped += fabsf(mix[i]) > 1.0f;
    return clipped;
}

/* The output stage's guard: finite sources can still sum (or be scaled) past float's range,
 * to Inf, and Inf - Inf is NaN.  Such samples are written as 0 and counted: the output stays
 * finite in every format (integer formats then saturate what is finite, see convert).  The
 * check is a branch-free scan; the fix-up runs only when it found something. */
static uint64_t zero_nonfinite(float *mix, size_t count)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &mix[i], sizeof bits);
        bad += (bits & 0x7f800000u) == 0x7f800000u;
    }
    if (bad)
        for (size_t i = 0; i < count; i++)
            if (!isfinite(mix[i]))
                mix[i] = 0.0f;
    return bad;
}

/* Convert the float period `mix` into `dst` in the output format (a float32 output was mixed
 * in place: only counted); returns the samples clipped. */
static uint64_t convert(sc_engine *e, const float *mix, void *dst)
{
    const size_t count = (size_t)e->config.blocksize * e->config.channels;
    uint64_t clipped = 0;
    switch (e->config.format) {
    case SC_FORMAT_F32:
        clipped = count_clipped(mix, count);
        if ((void *)mix != dst)
            memcpy(dst, mix, count * sizeof(float));
        break;
    case SC_FORMAT_S16: {
        int16_t *out = dst;
        for (size_t i = 0; i < count; i++) {
            float x = mix[i];
            clipped += x > 1.0f || x < -1.0f;
            float s = x * 32768.0f;
            if (e->config.dither) /* TPDF: two uniforms, triangular over ±1 LSB */
                s += uniform(&e->rng) - uniform(&e->rng);
            out[i] = s >= 32767.0f ? 32767 : s <= -32768.0f ? -32768
                                                             : (int16_t)(s < 0 ? s - 0.5f : s + 0.5f);
        }
        break;
    }
    case SC_FORMAT_S32: {
        int32_t *out = dst;
        for (size_t i = 0; i < count; i++) {
            float x = mix[i];
            clipped += x > 1.0f || x < -1.0f;
            double s = (double)x * 2147483648.0;
            out[i] = s >= 2147483647.0    ? INT32_MAX
                     : s <= -2147483648.0 ? INT32_MIN
                                          : (int32_t)(s < 0 ? s - 0.5 : s + 0.5);
        }
        break;
    }
    }
    return clipped;
}

/* Ask the memory system for every buffer voice's next block before mixing any: each voice
 * streams its own buffer, so in a cold cycle each block is a run of misses that the hardware
 * prefetcher cannot foresee; issued together they overlap (many misses in flight), instead of
 * one voice's misses at a time.  Stream voices read a ring that its producer just wrote, so
 * they are usually cached already and are left alone. */
static void prefetch_sources(const sc_engine *e)
{
    const size_t line = 64;
    uint32_t left = e->active_voices; /* the scan ends at the last of them */
    for (uint32_t s = 0; s < SC_MAX_VOICES && left; s++) {
        const sc_voice *v = &e->voices[s];
        if (v->phase == SC_PHASE_FREE)
            continue;
        left--;
        if (v->kind != SC_VOICE_BUFFER || v->position >= v->frames)
            continue;
        uint64_t frames = v->frames - v->position;
        if (frames > e->config.blocksize)
            frames = e->config.blocksize;
        const char *p = (const char *)(v->data + v->position * v->channels);
        const size_t bytes = (size_t)frames * v->channels * sizeof(float);
        for (size_t off = 0; off < bytes; off += line)
            __builtin_prefetch(p + off, 0, 3);
    }
}

void sc_mixer_render_period(sc_engine *e, void *dst)
{
    const uint64_t t0 = sc_read(&e->frames);
    const size_t samples = (size_t)e->config.blocksize * e->config.channels;
    const bool dithered = e->config.format == SC_FORMAT_S16 && e->config.dither;
    uint64_t clipped = 0;
    if (e->active_voices == 0 && !dithered) {
        memset(dst, 0, sc_period_bytes(e)); /* silence: zero in every format, nothing clips */
    } else {
        float *mix = e->config.format == SC_FORMAT_F32 && (uintptr_t)dst % sizeof(float) == 0
                         ? dst : e->mix;
        memset(mix, 0, sizeof(float) * samples);
        prefetch_sources(e);
        uint32_t left = e->active_voices; /* sc_mixer_hand_back() lowers active_voices as we go */
        for (uint32_t s = 0; s < SC_MAX_VOICES && left; s++) {
            sc_voice *v = &e->voices[s];
            if (v->phase == SC_PHASE_FREE)
                continue;
            left--;
            uint32_t end = mix_voice(e, v, mix, t0);
            if (end)
                sc_mixer_hand_back(e, v, s, end);
        }
        uint64_t fixed = zero_nonfinite(mix, samples);
        if (fixed) {
            sc_count(&e->output_fixed, fixed);
            sc_taint(e, SC_TAINT_NONFINITE_OUTPUT);
        }
        clipped = convert(e, mix, dst);
    }
    if (clipped) {
        sc_count(&e->clipped, clipped);
        sc_taint(e, SC_TAINT_CLIPPED);
    }
    sc_count(&e->frames, e->config.blocksize);
    sc_count(&e->periods, 1);
    atomic_store_explicit(&e->voices_now, e->active_voices - e->active_recordings,
                          memory_order_relaxed);
    atomic_store_explicit(&e->recordings_now, e->active_recordings, memory_order_relaxed);
}

void sc_mixer_flush(sc_engine *e)
{
    for (uint32_t s = 0; s < SC_MAX_VOICES; s++)
        if (e->voices[s].phase != SC_PHASE_FREE)
            sc_mixer_hand_back(e, &e->voices[s], s, SC_END_FLUSHED);
    atomic_store_explicit(&e->voices_now, 0, memory_order_relaxed);
    atomic_store_explicit(&e->recordings_now, 0, memory_order_relaxed);
}
