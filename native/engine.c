/*
 * engine.c: the engine's life cycle (create, destroy), its queues as seen from Python, and
 * the manual clock.  Start, stop and the mixer thread are in mixer_thread.c, what wakes it in
 * driver.c (or a sink's own driver), one cycle in cycle.c, the mix kernel in mixer.c, the
 * watchdog in watchdog.c, the telemetry in telemetry.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine_internal.h"

static int check_config(const sc_engine_config *c)
{
    if (c->samplerate < SC_MIN_SAMPLERATE || c->samplerate > SC_MAX_SAMPLERATE)
        return -EINVAL;
    if (c->blocksize < SC_MIN_BLOCKSIZE || c->blocksize > SC_MAX_BLOCKSIZE)
        return -EINVAL;
    if (c->channels < 1 || c->channels > SC_MAX_CHANNELS)
        return -EINVAL;
    if (c->periods < 2 || c->periods > SC_MAX_PERIODS)
        return -EINVAL;
    if (c->format != SC_FORMAT_F32 && c->format != SC_FORMAT_S16 && c->format != SC_FORMAT_S32)
        return -EINVAL;
    if (c->clock > SC_CLOCK_CONSUMER || c->content > SC_CONTENT_PACED)
        return -EINVAL;
    if (c->watchdog && (c->overruns_in_row < 1 || c->budget_ns <= 0 || c->hard_limit_ns <= 0 ||
                        c->canary_ns <= 0 || c->watchdog_interval_ns <= 0))
        return -EINVAL;
    return 0;
}

int sc_engine_create(sc_engine **out, const sc_engine_config *config)
{
    *out = NULL;
    int rc = check_config(config);
    if (rc)
        return rc;
    size_t head = (sizeof(sc_engine) + SC_CACHELINE - 1) / SC_CACHELINE * SC_CACHELINE;
    size_t mix_bytes = sizeof(float) * config->blocksize * config->channels;
    size_t bytes = sc_page_round(head + mix_bytes);
    /* Zeroed: every counter starts at 0, every voice FREE; written once, so prefaulted. */
    int locked = 0;
    void *p = sc_locked_map(bytes, config->lock_memory, &locked);
    if (p == NULL)
        return -errno;
    sc_engine *e = p;
    e->config = *config;
    e->map_bytes = bytes;
    e->mix = (float *)((char *)p + head);
    e->period_ns = (int64_t)config->blocksize * 1000000000 / config->samplerate;
    atomic_store_explicit(&e->target_fill, config->periods * config->blocksize,
                          memory_order_relaxed);
    e->rng = config->seed ? config->seed : 0x9E3779B9u;
    atomic_store_explicit(&e->end_frame, -1, memory_order_relaxed);
    atomic_store_explicit(&e->granted_policy, -1, memory_order_relaxed);
    e->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->end_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->progress_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->event_fd < 0 || e->end_fd < 0 || e->progress_fd < 0) {
        rc = -errno;
        if (e->event_fd >= 0)
            close(e->event_fd);
        if (e->end_fd >= 0)
            close(e->end_fd);
        sc_locked_unmap(p, bytes);
        return rc;
    }
    sc_telemetry_reset(&e->telemetry);
    if (config->lock_memory && !locked)
        sc_taint(e, SC_TAINT_MLOCK_FAILED);
    *out = e;
    return 0;
}

void sc_engine_destroy(sc_engine *e)
{
    if (e == NULL)
        return;
    sc_engine_stop(e);
    sc_rt_thread_release(&e->mixer);
    if (e->event_fd >= 0)
        close(e->event_fd);
    if (e->end_fd >= 0)
        close(e->end_fd);
    if (e->progress_fd >= 0)
        close(e->progress_fd);
    sc_locked_unmap(e, e->map_bytes); /* also unlocks */
}

int sc_engine_flush(sc_engine *e)
{
    if (atomic_load_explicit(&e->running, memory_order_acquire))
        return -EBUSY;
    sc_mixer_apply_commands(e); /* ADDs still queued become voices, returned just below */
    sc_mixer_flush(e);
    return 0;
}

int64_t sc_engine_render(sc_engine *e, void *dst, uint32_t periods)
{
    if (e->config.clock != SC_CLOCK_MANUAL)
        return -EINVAL;
    const size_t period_bytes = sc_period_bytes(e);
    for (uint32_t k = 0; k < periods; k++) {
        sc_wake w = {.woke_ns = sc_now_ns()};
        sc_cycle_run(e, &w, (char *)dst + k * period_bytes);
    }
    return periods;
}

int sc_engine_command(sc_engine *e, const sc_command *cmd)
{
    if (cmd->slot >= SC_MAX_VOICES || cmd->op < SC_CMD_ADD || cmd->op > SC_CMD_FINISH)
        return -EINVAL;
    int64_t i = sc_spsc_reserve(&e->commands, SC_COMMAND_SLOTS);
    if (i < 0)
        return -EAGAIN;
    e->command_slots[i] = *cmd;
    sc_spsc_publish(&e->commands);
    sc_engine_wake_for_work(e);
    return 0;
}

void sc_engine_drain(sc_engine *e)
{
    atomic_store_explicit(&e->drain_asked, 1, memory_order_release);
    sc_engine_wake_for_work(e);
}

int64_t sc_engine_end_frame(const sc_engine *e)
{
    return atomic_load_explicit((_Atomic int64_t *)&e->end_frame, memory_order_acquire);
}

uint64_t sc_engine_run_start(const sc_engine *e)
{
    return e->run_first_frame;
}

uint64_t sc_engine_deliverable(const sc_engine *e)
{
    const int64_t end = sc_engine_end_frame(e);
    if (end >= 0)
        return (uint64_t)end;
    if (e->config.content != SC_CONTENT_ONLY)
        return UINT64_MAX;
    return atomic_load_explicit((_Atomic uint64_t *)&e->voiced_frames, memory_order_acquire);
}

int sc_engine_set_fill(sc_engine *e, uint32_t frames)
{
    const uint32_t n = e->config.blocksize;
    if (frames % n != 0 || frames < 2 * n)
        return -EINVAL;
    if (e->output == NULL || frames > sc_ring_capacity(e->output))
        return -ENOSPC;
    const uint32_t old = atomic_exchange_explicit(&e->target_fill, frames, memory_order_relaxed);
    if (frames > old) /* render up to it now, not at the consumer's next period */
        sc_futex_bump_wake(&e->consumed_seq);
    return 0;
}

int sc_engine_set_input(sc_engine *e, sc_ring *capture, sc_ring *tap)
{
    if (e->driver != NULL)
        return -EBUSY;
    if (tap != NULL && capture == NULL)
        return -EINVAL;
    if (capture != NULL && (sc_ring_format(capture) != SC_FORMAT_F32 ||
                            (tap != NULL && (sc_ring_format(tap) != SC_FORMAT_F32 ||
                                             sc_ring_channels(tap) != sc_ring_channels(capture)))))
        return -EINVAL;
    e->capture = capture;
    e->tap = tap;
    e->tap_gap = 0;
    atomic_store_explicit(&e->tap_origin, -1, memory_order_relaxed);
    if (capture != NULL) {
        sc_ring_stats rs;
        sc_ring_get_stats(capture, &rs);
        atomic_store_explicit(&e->input_frame, rs.frames_read, memory_order_release);
        e->capture_lost_seen = rs.overruns;
    }
    return 0;
}

void sc_engine_arm_tap(sc_engine *e, int32_t armed)
{
    if (armed && !atomic_load_explicit(&e->tap_armed, memory_order_relaxed)) {
        /* A new arming: the mixer notes where the tap's frames start when it first writes. */
        atomic_store_explicit(&e->tap_origin, -1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->tap_arming, 1, memory_order_release);
    }
    atomic_store_explicit(&e->tap_armed, armed ? 1 : 0, memory_order_release);
}

uint32_t sc_engine_input_peaks(sc_engine *e, float *out, uint32_t max)
{
    uint32_t n = e->capture ? sc_ring_channels(e->capture) : 0;
    if (n > max)
        n = max;
    for (uint32_t c = 0; c < n; c++) {
        uint32_t bits = atomic_exchange_explicit(&e->input_peak[c], 0, memory_order_relaxed);
        memcpy(&out[c], &bits, sizeof bits);
    }
    return n;
}

int32_t sc_engine_mixing(const sc_engine *e)
{
    return atomic_load_explicit((_Atomic int32_t *)&e->running, memory_order_acquire) &&
           !atomic_load_explicit((_Atomic int32_t *)&e->mixer_done, memory_order_acquire);
}

uint64_t sc_engine_input_frame(const sc_engine *e)
{
    return atomic_load_explicit((_Atomic uint64_t *)&e->input_frame, memory_order_acquire);
}

uint32_t sc_engine_fill(const sc_engine *e)
{
    return atomic_load_explicit((_Atomic uint32_t *)&e->target_fill, memory_order_relaxed);
}

int32_t sc_engine_voice_ended(const sc_engine *e, uint32_t slot, uint32_t generation)
{
    if (slot >= SC_MAX_VOICES)
        return 0;
    const sc_voice *v = &e->voices[slot];
    return atomic_load_explicit((_Atomic uint32_t *)&v->ended_generation,
                                memory_order_acquire) == generation;
}

int sc_engine_poll_return(sc_engine *e, sc_voice_return *out)
{
    int64_t i = sc_spsc_peek(&e->returns, SC_MAX_VOICES);
    if (i < 0)
        return 0;
    *out = e->return_slots[i];
    sc_spsc_consume(&e->returns);
    return 1;
}

int sc_engine_voice_stats(const sc_engine *e, uint32_t slot, sc_voice_stats *out)
{
    if (slot >= SC_MAX_VOICES)
        return -EINVAL;
    const sc_voice *v = &e->voices[slot];
    out->generation = atomic_load_explicit((_Atomic uint32_t *)&v->live_generation,
                                           memory_order_relaxed);
    out->active = atomic_load_explicit((_Atomic uint32_t *)&v->active, memory_order_acquire);
    out->frames_played = sc_read(&v->frames_played);
    out->underruns = sc_read(&v->underruns);
    out->underrun_frames = sc_read(&v->underrun_frames);
    out->nonfinite = sc_read(&v->nonfinite);
    out->start_frame = atomic_load_explicit((_Atomic int64_t *)&v->live_start,
                                            memory_order_relaxed);
    return 0;
}

int sc_engine_poll_event(sc_engine *e, sc_event *out)
{
    int64_t i = sc_spsc_peek(&e->events, SC_EVENT_SLOTS);
    if (i < 0)
        return 0;
    *out = e->event_slots[i];
    sc_spsc_consume(&e->events);
    return 1;
}

int sc_engine_event_fd(const sc_engine *e) { return e->event_fd; }

int sc_engine_end_fd(const sc_engine *e) { return e->end_fd; }

int sc_engine_progress_fd(const sc_engine *e) { return e->progress_fd; }

void sc_engine_watch_progress(sc_engine *e, int32_t delta)
{
    atomic_fetch_add_explicit(&e->progress_watchers, delta, memory_order_acq_rel);
}

void sc_engine_watch_ends(sc_engine *e, int32_t watch)
{
    atomic_store_explicit(&e->end_watched, watch ? 1 : 0, memory_order_release);
}

void sc_engine_taint(sc_engine *e, uint32_t taints) { sc_taint(e, taints); }

void sc_engine_set_granted(sc_engine *e, int32_t policy)
{
    atomic_store_explicit(&e->granted_policy, policy, memory_order_release);
    atomic_fetch_add_explicit(&e->grants, 1, memory_order_acq_rel);
}

void sc_engine_rearm(sc_engine *e)
{
    atomic_store_explicit(&e->rearm_request, 1, memory_order_release);
}

void sc_engine_test_spin(sc_engine *e, int64_t spin_ns, uint32_t cycles)
{
    atomic_store_explicit(&e->spin_ns, spin_ns, memory_order_relaxed);
    atomic_store_explicit(&e->spin_cycles, cycles, memory_order_release);
}
