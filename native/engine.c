/*
 * engine.c: the engine's life cycle (create, destroy), its queues as seen from Python, and
 * the manual clock.  The mixer thread and its clocks are in clock.c, the mix kernel in
 * mixer.c, the watchdog in watchdog.c, the telemetry in telemetry.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine_internal.h"

static size_t page_round(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

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
    if (c->format != SC_OUT_F32 && c->format != SC_OUT_S16 && c->format != SC_OUT_S32)
        return -EINVAL;
    if (c->clock > SC_CLOCK_CONSUMER || c->sink > SC_SINK_NULL)
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
    size_t bytes = page_round(head + mix_bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    /* mmap gives zeroed memory: every counter starts at 0, every voice FREE.  Writing it once
     * prefaults every page, so neither a failed mlock nor a fresh page costs a fault later. */
    memset(p, 0, bytes);
    sc_engine *e = p;
    e->config = *config;
    e->map_bytes = bytes;
    e->mix = (float *)((char *)p + head);
    e->period_ns = (int64_t)config->blocksize * 1000000000 / config->samplerate;
    e->target_fill = config->periods * config->blocksize;
    e->rng = config->seed ? config->seed : 0x9E3779B9u;
    e->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->event_fd < 0) {
        rc = -errno;
        munmap(p, bytes);
        return rc;
    }
    sc_telemetry_reset(&e->telemetry);
    if (config->lock_memory && mlock(p, bytes) != 0)
        sc_taint(e, SC_TAINT_MLOCK_FAILED);
    *out = e;
    return 0;
}

void sc_engine_destroy(sc_engine *e)
{
    if (e == NULL)
        return;
    sc_engine_stop(e);
    sc_engine_free_stack(e);
    if (e->event_fd >= 0)
        close(e->event_fd);
    munmap(e, e->map_bytes); /* also unlocks */
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
        int64_t t0 = sc_now_ns();
        sc_mixer_apply_commands(e);
        sc_mixer_render_period(e, (char *)dst + k * period_bytes);
        sc_histogram_add(&e->telemetry.mix, sc_now_ns() - t0);
        sc_histogram_add(&e->telemetry.late, 0);
        sc_count(&e->cycles, 1);
        sc_telemetry_answer_snapshot(e);
    }
    return periods;
}

int sc_engine_command(sc_engine *e, const sc_command *cmd)
{
    if (cmd->slot >= SC_MAX_VOICES || cmd->op < SC_CMD_ADD || cmd->op > SC_CMD_SNAPSHOT)
        return -EINVAL;
    int64_t i = sc_spsc_reserve(&e->commands, SC_COMMAND_SLOTS);
    if (i < 0)
        return -EAGAIN;
    e->command_slots[i] = *cmd;
    sc_spsc_publish(&e->commands);
    return 0;
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

void sc_engine_taint(sc_engine *e, uint32_t taints) { sc_taint(e, taints); }

void sc_engine_rearm(sc_engine *e)
{
    atomic_store_explicit(&e->rearm_request, 1, memory_order_release);
}

void sc_engine_test_spin(sc_engine *e, int64_t spin_ns, uint32_t cycles)
{
    atomic_store_explicit(&e->spin_ns, spin_ns, memory_order_relaxed);
    atomic_store_explicit(&e->spin_cycles, cycles, memory_order_release);
}
