/*
 * engine_internal.h: the engine's memory layout and the helpers its C files share
 * (mixer.c, telemetry.c, watchdog.c, engine.c).  Not part of the Python contract.
 *
 * Everything the mixer thread touches lives in one mmap'ed, mlocked, prefaulted block (struct
 * sc_engine followed by the mix buffer), so its cycle cannot fault a page.
 */
#ifndef STREAMCORE_ENGINE_INTERNAL_H
#define STREAMCORE_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "streamcore.h"

#include "driver.h"
#include "rt.h"
#include "spsc.h"

/* ---- voices ------------------------------------------------------------------------------ */
enum sc_voice_phase { SC_PHASE_FREE = 0, SC_PHASE_WAITING, SC_PHASE_PLAYING, SC_PHASE_FADING };

typedef struct sc_voice {
    uint32_t phase;            /* sc_voice_phase; mixer-private */
    uint32_t generation;
    uint32_t kind;
    uint32_t channels;
    uint32_t loop;
    uint32_t primed;           /* stream voices: data has arrived once (underruns count after) */
    uint32_t finishing;        /* stream voices: SC_CMD_FINISH came; end when the ring is empty */
    uint32_t monitor;          /* stream voices: fed by the capture step (input monitoring) */
    uint8_t input_map[SC_MAX_CHANNELS]; /* its channel c is input channel input_map[c] */
    uint32_t mapped;           /* its channel c plays on output channel output_map[c] only */
    uint8_t output_map[SC_MAX_CHANNELS];
    const float *data;
    uint64_t frames;
    sc_ring *ring;
    uint64_t position;         /* next source frame (buffer voices) */
    uint64_t skip_left;        /* stream voices, SC_LATE_SKIP: due frames still to drop as
                                  they arrive, so frame k still plays at start + k */
    int64_t start_frame;
    uint64_t fade_in_frames;   /* 0: none */
    uint64_t since_start;      /* frames played, for the fade-in envelope */
    uint64_t fade_total;       /* fade-out length */
    uint64_t fade_left;        /* frames of fade-out still to play */
    int64_t stop_at;           /* SC_CMD_STOP for a later frame: stop (fade) from it, or -1 */
    uint64_t stop_fade;        /* ... over this many frames (0: end there) */
    int64_t set_at;            /* SC_CMD_SET for a later frame: new gains from it, or -1 */
    float set_gain, set_pan;
    float gain, pan;
    float current[SC_MAX_CHANNELS]; /* per output channel gain now */
    float target[SC_MAX_CHANNELS];  /* ... and at the end of the ramp */
    /* Read live by Python (relaxed). */
    _Atomic uint32_t live_generation;
    _Atomic int64_t live_start;    /* start_frame, for Python */
    _Atomic uint32_t active;
    /* The generation the mixer last handed back, stored before it wakes the voice's ring: a
     * writer woken by that wake sees its voice ended before the return is even published
     * (and cannot wait again for a wake that will not come). */
    _Atomic uint32_t ended_generation;
    sc_counter frames_played;
    sc_counter underruns;
    sc_counter underrun_frames;
    sc_counter nonfinite;
} sc_voice;

/* ---- telemetry (telemetry.c) --------------------------------------------------------------- */
typedef struct sc_telemetry {
    sc_histogram late;
    sc_histogram mix;
    _Alignas(SC_CACHELINE) _Atomic uint64_t written; /* records ever written */
    sc_trace_record records[SC_TRACE_SLOTS];
} sc_telemetry;

void sc_telemetry_reset(sc_telemetry *t);
void sc_telemetry_record(sc_telemetry *t, const sc_trace_record *r);
/* End of a cycle: answer a pending snapshot request (mixer thread). */
void sc_telemetry_answer_snapshot(sc_engine *e);

/* ---- the engine ---------------------------------------------------------------------------- */
/* The engine's own drivers' state (driver.c); mixer-private once started. */
typedef struct sc_timer_driver {
    int64_t deadline_ns;       /* the next tick */
} sc_timer_driver;

typedef struct sc_consumer_driver {
    uint32_t seen;             /* consumed_seq at the last wake-up */
    uint32_t underruns_seen;
} sc_consumer_driver;

struct sc_engine {
    sc_engine_config config;
    size_t map_bytes;          /* the whole mapping: this struct + mix buffer */
    int64_t period_ns;
    _Atomic uint32_t target_fill; /* frames the mixer keeps in the output ring: periods *
                                  blocksize, raised or lowered by sc_engine_set_fill */
    float *mix;                /* blocksize * channels floats, after this struct */
    uint32_t rng;              /* xorshift32 state for the dither (mixer-private) */

    /* Command queue: Python -> mixer. */
    sc_spsc commands;
    sc_command command_slots[SC_COMMAND_SLOTS];
    /* Return queue: mixer -> Python.  Each slot is returned once per ADD, so it never fills. */
    sc_spsc returns;
    sc_voice_return return_slots[SC_MAX_VOICES];
    /* Event queue: watchdog -> Python. */
    sc_spsc events;
    sc_event event_slots[SC_EVENT_SLOTS];
    int event_fd;
    /* Voice ends: an eventfd the mixer writes once per voice handed back, only while
     * Python watches it (sc_engine_watch_ends): Voice.wait and asyncio wait without polling. */
    int end_fd;
    _Atomic int32_t end_watched;
    /* Progress: an eventfd the mixer writes at the end of each cycle that rendered, only
     * while someone waits for it (asyncio writers waiting for room in a stream voice). */
    int progress_fd;
    _Atomic int32_t progress_watchers;

    sc_voice voices[SC_MAX_VOICES];
    uint32_t active_voices;    /* mixer-private; mirrored into voices_now */

    /* Counters (single writer: the mixer, except where noted). */
    sc_counter cycles, periods, consumed, skipped, xruns, frames, clipped, nonfinite,
        underruns, late_starts, commands_done, overruns, hard_overruns, output_fixed;
    sc_counter sigxcpu;        /* written by the signal handler (atomic add) */
    sc_counter demotions;      /* written by the watchdog */
    sc_counter realtime_losses; /* the watchdog saw the mixer lose realtime to someone else */
    _Atomic uint32_t voices_now, fill_now;
    _Atomic uint32_t taints;   /* atomic OR from any thread */
    int64_t start_ns;

    /* Mixer <-> watchdog. */
    _Atomic int64_t busy_since_ns;
    _Atomic uint32_t cycle_periods; /* periods the current cycle renders (its limits scale) */
    _Atomic uint64_t streak;
    _Atomic int64_t canary_ns;
    _Atomic int32_t rearm_request;
    _Atomic int32_t demoted;   /* the mixer runs demoted (trace flag) */
    _Atomic int32_t granted_policy; /* the realtime policy Python got for the mixer, or -1 */
    _Atomic uint32_t grants;   /* sc_engine_set_granted calls: a new grant is a new loss to see */
    sc_watchdog_state wd_state; /* watchdog-private */
    _Atomic uint32_t watchdog_wake; /* futex word: bumped to end the watchdog's wait early */
    _Atomic(struct sc_engine *) registry_next; /* the SIGXCPU list (watchdog.c) */
    int registered;            /* on that list (under its mutex) */

    /* The driver, from sc_engine_start to sc_engine_stop (driver.h), NULL while stopped: the
     * engine is started exactly while it is set.  own_driver is the engine's timer or
     * consumer driver when no sink brought one. */
    const sc_driver *driver;
    sc_driver own_driver;
    sc_timer_driver timer;
    sc_consumer_driver consumer;
    _Atomic int32_t driver_error; /* errno that ended the mixer's driver, or 0 */
    _Atomic int32_t mixer_done;   /* the mixer left its loop (the driver stopped or failed) */

    /* Consumer clock (sc_engine_periods_consumed, any sink thread). */
    _Atomic uint32_t consumed_seq; /* futex word */
    _Atomic int64_t consumed_at_ns;
    _Atomic uint32_t consumer_underruns;

    /* Consistent stats on request (SC_CMD_SNAPSHOT). */
    uint32_t snapshot_wanted;  /* mixer-private: token to answer at the end of the cycle */
    _Atomic uint32_t snapshot_token; /* token of the copy in `snapshot`, release-published */
    sc_engine_stats snapshot;

    /* Streams have ends (SC_CONTENT_*, sc_engine_drain).  Frames of the current run. */
    uint64_t run_first_frame;  /* e->frames when the run started */
    uint64_t voiced_until;     /* mixer-private: engine frame after the last one a voice played */
    uint32_t content_seen;     /* mixer-private: a voice played in this run (SC_CONTENT_PACED) */
    uint32_t holding;          /* mixer-private: the last cycle held for want of content */
    _Atomic uint64_t voiced_frames; /* voiced_until - run_first_frame, published per cycle */
    _Atomic int32_t drain_asked;
    _Atomic int64_t end_frame; /* -1, or the run's end once drained (release-published) */
    sc_counter holds;
    _Atomic uint32_t work_seq;  /* futex word: bumped by commands, drain and stop */
    _Atomic uint32_t idle_waiting; /* the mixer sleeps on work_seq */

    /* Capture (capture.c; sc_engine_set_input): the sink writes `capture`, the mixer reads it
     * and hands each frame to the recordings and, while armed, to `tap`. */
    sc_ring *capture, *tap;
    _Atomic uint64_t input_frame;  /* the capture index of the next frame to distribute */
    _Atomic int32_t tap_armed;
    _Atomic uint32_t tap_arming; /* bumped by each arming (the mixer then starts anew) */
    uint32_t tap_arming_seen;  /* mixer-private */
    _Atomic int64_t tap_origin;
    uint64_t tap_gap;          /* mixer-private: tap frames lost, not yet written as zeros */
    uint64_t capture_lost_seen;/* mixer-private: the sink's lost-frame count last cycle */
    uint32_t active_recordings;/* mixer-private; mirrored into recordings_now */
    uint32_t active_monitors;  /* mixer-private */
    sc_counter monitor_dropped; /* captured frames a monitor's ring had no room for */
    _Atomic uint32_t recordings_now;
    sc_counter input_gaps, tap_frames, tap_overflows, tap_lost_frames;
    /* Input level meters: the largest |sample| per channel since Python last took them
     * (float bits; the mixer raises, sc_engine_input_peaks exchanges with 0). */
    _Atomic uint32_t input_peak[SC_MAX_CHANNELS];

    /* Test hook. */
    _Atomic int64_t spin_ns;
    _Atomic uint32_t spin_cycles;

    /* Threads. */
    sc_ring *output;
    _Atomic int32_t running;
    sc_rt_thread mixer, watchdog, canary;

    sc_telemetry telemetry;
};

/* mixer.c: pure mixing (voices -> one period); no thread, no syscall. */
void sc_mixer_apply_commands(sc_engine *e);
/* SC_CONTENT_ONLY: can the next period be rendered from what the voices have?  (Some voice
 * plays, and every stream voice that has begun holds a whole period or was finished.) */
bool sc_mixer_has_content(const sc_engine *e);
/* Render one period into dst (output format). */
void sc_mixer_render_period(sc_engine *e, void *dst);
void sc_mixer_flush(sc_engine *e);
/* Hand a voice (slot) back to Python with an SC_END_* reason. */
void sc_mixer_hand_back(sc_engine *e, sc_voice *v, uint32_t slot, uint32_t reason);

/* capture.c: the cycle's input step (mixer thread), after the commands: every frame the sink
 * captured since the last cycle goes to the recordings and the armed tap. */
void sc_capture_run(sc_engine *e);

/* cycle.c: one cycle, for every driver and for manual rendering.  Applies commands, renders
 * (into `dst`, one period, when dst is not NULL; else into the output ring until it holds
 * target_fill frames) and accounts the cycle (budget, trace, histograms, snapshot).  Returns
 * the periods rendered. */
uint32_t sc_cycle_run(sc_engine *e, const sc_wake *w, void *dst);
/* Before the driver runs (sc_engine_start, in the caller): commands, then fill the output ring.
 * Not a cycle: nothing is accounted. */
void sc_cycle_prefill(sc_engine *e);

/* driver.c: the engine's own drivers. */
void sc_driver_timer_init(sc_engine *e);
void sc_driver_consumer_init(sc_engine *e);

/* watchdog.c */
int sc_watchdog_start(sc_engine *e);
void sc_watchdog_stop(sc_engine *e);

/* Bytes of one output period in the engine's output format. */
static inline size_t sc_period_bytes(const sc_engine *e)
{
    return (size_t)e->config.blocksize * e->config.channels *
           (e->config.format == SC_FORMAT_S16 ? sizeof(int16_t) : sizeof(int32_t));
}

static inline void sc_taint(sc_engine *e, uint32_t bits)
{
    atomic_fetch_or_explicit(&e->taints, bits, memory_order_relaxed);
}

#endif
