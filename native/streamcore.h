/*
 * streamcore.h: the whole contract between the C core and Python.
 *
 * cffi's cdef() parses this file as it is (native/build.py feeds it to both cdef() and
 * set_source()), so it holds only what cdef understands: fixed-width types, opaque struct
 * declarations, prototypes and integer #defines.  No #include, no include guard, no inline
 * code: each .c file includes the system headers it needs before this one.
 *
 * Every exported name starts with sc_; a function that can fail returns 0 or a negative errno
 * (-EINVAL, -ENOMEM, ...), which streamcore.errors turns into an exception.
 */

/* ---- build and process facts (native/build_info.c) ---------------------------------- */

#define SC_ABI_VERSION 1

/* The compiler flags the module was built with, as one string. */
const char *sc_build_flags(void);
/* SC_ABI_VERSION as compiled into the shared object (catches a stale build). */
int sc_abi_version(void);
/* Try to mlock (then munlock) `bytes` of fresh memory: 0, or -errno (EPERM, ENOMEM, EAGAIN). */
int sc_probe_mlock(size_t bytes);

/* ---- rings (native/ring.c) -------------------------------------------------------------
 * The mlocked mirrored SPSC ring: see streamcore/ring.py for the concurrency contract.
 * (section owned by the ring work; keep these separator comments so sections merge apart)
 */

/* Sample formats (one sample of one channel), of rings and of the engine's output alike. */
#define SC_FORMAT_F32 1
#define SC_FORMAT_S16 2
#define SC_FORMAT_S32 3

/* The shared control block, page 0 of the memfd (the data pages follow it).  Offsets are part
 * of the contract so tools and tests can inspect (or, in tests, attack) a ring from outside. */
#define SC_RING_MAGIC 0x53434F5245524E47
#define SC_RING_VERSION 3
#define SC_RING_OFF_MAGIC 0
#define SC_RING_OFF_VERSION 8
#define SC_RING_OFF_FORMAT 12
#define SC_RING_OFF_CHANNELS 16
#define SC_RING_OFF_FRAME_BYTES 20
#define SC_RING_OFF_CAPACITY 24
#define SC_RING_OFF_BROKEN 48
#define SC_RING_OFF_WRITE_INDEX 128
#define SC_RING_OFF_READ_INDEX 256
/* Largest ring: 1 GiB of data. */
#define SC_RING_MAX_BYTES 1073741824

/* Opaque, process-local handle to a (possibly shared) ring. */
typedef struct sc_ring sc_ring;

typedef struct sc_ring_stats {
    uint64_t frames_written, frames_read;  /* totals: the shared free-running indices */
    uint64_t overruns;     /* write_region calls that got fewer frames than asked (ring full) */
    uint64_t underruns;    /* read_region calls that got fewer frames than asked */
    uint64_t corruptions;  /* inconsistent indices seen through this handle */
    uint64_t locked_bytes; /* bytes mlocked by sc_ring_lock (each physical page once) */
    int32_t locked;        /* 1 when sc_ring_lock succeeded */
    int32_t lock_errno;    /* errno of a failed sc_ring_lock, else 0 */
    int32_t broken;        /* 1 once this handle or the shared header was marked broken */
} sc_ring_stats;

/* Create a ring of at least `frames` frames of `channels` samples in `format`: one sealed memfd
 * (control page + data) whose data is mapped twice back to back.  The capacity is rounded up to
 * a power of two such that capacity * frame_bytes is a whole number of pages.  `name` (may be
 * NULL) labels the memfd in /proc/PID/fd.  0 or -EINVAL / -ENOMEM / -EMFILE ... */
int sc_ring_create(sc_ring **out, uint64_t frames, uint32_t channels, uint32_t format,
                   const char *name);
/* Map the ring whose memfd is `fd` (made by sc_ring_create, possibly in another process).  The
 * fd is dup'd: the caller keeps its own and may close it.  Validates the header and refuses:
 * -EBADF (not an open fd), -EINVAL (not a sealed memfd of the size its header says),
 * -EPROTO (bad magic: not a streamcore ring), -EPROTONOSUPPORT (other version),
 * -EBADMSG (format, channels or capacity inconsistent), -EPIPE (ring already broken). */
int sc_ring_attach(sc_ring **out, int fd);
/* Unmap, close the handle's fd, free the handle.  NULL-safe.  Not realtime-safe. */
void sc_ring_destroy(sc_ring *ring);
/* mlock the control page and the data (each physical page once, the mirror is not counted
 * twice) and prefault both mappings so no access faults later.  0 or -errno (EPERM, ENOMEM,
 * EAGAIN); the result is also kept in the stats.  Not realtime-safe. */
int sc_ring_lock(sc_ring *ring);
/* madvise(MADV_DONTFORK) the whole mapping: a forked child does not inherit it (for rings that
 * must not leak into children; never for rings meant to be shared by fork).  0 or -errno. */
int sc_ring_dontfork(sc_ring *ring);
int sc_ring_fd(const sc_ring *ring);
uint64_t sc_ring_capacity(const sc_ring *ring);   /* frames */
uint32_t sc_ring_channels(const sc_ring *ring);
uint32_t sc_ring_format(const sc_ring *ring);
uint32_t sc_ring_frame_bytes(const sc_ring *ring);
/* First byte of the data's first mapping; the mirror follows at + capacity * frame_bytes. */
void *sc_ring_data(const sc_ring *ring);

/* Producer side (one thread or process at a time): *data = up to max_frames contiguous
 * writable frames (never split at the wrap); returns their count k >= 0, or -EPIPE when the
 * ring is (or is now found) broken.  Realtime-safe. */
int64_t sc_ring_write_region(sc_ring *ring, uint64_t max_frames, void **data);
/* Publish `frames` written frames: 0, -EINVAL when frames > writable (nothing changes), -EPIPE. */
int sc_ring_write_advance(sc_ring *ring, uint64_t frames);
/* Consumer side (one thread or process at a time): the same for readable frames. */
int64_t sc_ring_read_region(sc_ring *ring, uint64_t max_frames, void **data);
int sc_ring_read_advance(sc_ring *ring, uint64_t frames);
/* Fill levels, from either side: frames readable / writable now, or -EPIPE when broken. */
int64_t sc_ring_readable(const sc_ring *ring);
int64_t sc_ring_writable(const sc_ring *ring);
/* Copying conveniences (realtime-safe): copy up to `frames` frames from `src` into the ring and
 * publish them / copy up to `frames` out into `dst` and release them.  The count moved, or
 * -EPIPE; a short count is an overrun / underrun like a short region. */
int64_t sc_ring_write_frames(sc_ring *ring, const void *src, uint64_t frames);
int64_t sc_ring_read_frames(sc_ring *ring, void *dst, uint64_t frames);
/* A writer that must never lose its place (a capture: frame k of everything offered belongs at
 * ring index first + k): first the `*gap` frames lost earlier are written as zeros, then
 * `src`; what does not fit is added to `*gap` (to be written as zeros once there is room).
 * Returns the frames of `src` written (0 .. frames), or -EPIPE.  Realtime-safe. */
int64_t sc_ring_write_gapless(sc_ring *ring, const void *src, uint64_t frames, uint64_t *gap);
void sc_ring_get_stats(const sc_ring *ring, sc_ring_stats *out);
/* Block until at least `frames` frames are writable (readable), the ring is broken, the
 * deadline passes (CLOCK_MONOTONIC ns; negative: no deadline), or sc_ring_wake is called.
 * `wakes` is sc_ring_wakes() as the caller saw it before it decided to wait: a wake since
 * then ends the wait at once (none is lost between the caller's checks and the wait).
 * Woken by the peer's next advance (a shared futex: the peer may be another process).
 * Returns the frames writable (readable) then, >= frames; or -ETIMEDOUT, -EAGAIN (woken by
 * sc_ring_wake: look at why), -EPIPE (broken), -EINVAL (frames > capacity).  Not realtime:
 * the waiting side's call. */
int64_t sc_ring_wait_writable(sc_ring *ring, uint64_t frames, int64_t deadline_ns,
                              uint32_t wakes);
int64_t sc_ring_wait_readable(sc_ring *ring, uint64_t frames, int64_t deadline_ns,
                              uint32_t wakes);
/* How many times sc_ring_wake was called on this ring (any process). */
uint32_t sc_ring_wakes(const sc_ring *ring);
/* Wake whoever waits on either side now, to look again (its peer ended, say): one load per
 * side and no syscall when nobody waits, so realtime-safe. */
void sc_ring_wake(sc_ring *ring);


/* The two sides of a ring and what each knows of the other (sc_ring_claim). */
#define SC_RING_WRITER 1
#define SC_RING_READER 2
#define SC_RING_PEER_NONE 0    /* nobody claimed the side yet */
#define SC_RING_PEER_OPEN 1    /* claimed by `pid`; it may have died since (ask its pidfd) */
#define SC_RING_PEER_CLOSED 2  /* claimed, then left (sc_ring_leave, or its handle destroyed) */

typedef struct sc_ring_peer {
    int32_t pid;           /* as its own PID namespace numbers it */
    uint32_t state;        /* SC_RING_PEER_* (an impossible stored value reads as NONE) */
    uint64_t pidns;        /* inode of that namespace (/proc/PID/ns/pid); 0: unknown */
} sc_ring_peer;

/* Say that this process is the ring's writer and/or reader (`sides`): its pid and PID
 * namespace go into the shared header for the other side to see.  A later claim of the same
 * side (a new producer) replaces it.  0 or -EINVAL.  Not realtime-safe. */
int sc_ring_claim(sc_ring *ring, uint32_t sides);
/* Give up sides this handle claimed: their state becomes CLOSED (only if this process still
 * holds the claim) and waiters on either side are woken.  sc_ring_destroy leaves what the
 * handle still holds.  Not realtime-safe. */
void sc_ring_leave(sc_ring *ring, uint32_t sides);
uint32_t sc_ring_claimed(const sc_ring *ring); /* the sides this handle holds */
/* What the shared header says of one side (SC_RING_WRITER or SC_RING_READER): 0 or -EINVAL. */
int sc_ring_get_peer(const sc_ring *ring, uint32_t side, sc_ring_peer *out);
uint64_t sc_ring_own_pidns(void); /* this process's PID namespace inode, 0 unknown */
/* Just the state of one side (one load: cheap enough for every write). */
uint32_t sc_ring_peer_state(const sc_ring *ring, uint32_t side);
/* 1 when the writer left (CLOSED): nothing more will come.  One load: realtime-safe. */
int sc_ring_writer_closed(const sc_ring *ring);


/* ---- pipes (native/pipe.c) ------------------------------------------------------------
 * vmsplice/splice/tee primitives for the pipe sink, and the double-buffer rule in one place:
 * pages handed to a pipe with vmsplice are referenced, not copied, so a buffer half may be
 * rewritten only after the OTHER half, of at least the pipe's size, was spliced in whole.
 * Every function blocks SIGPIPE for its own thread: a vanished reader is -EPIPE, not death.
 */

/* F_SETPIPE_SZ to at least `bytes`; returns the size the kernel actually set, or -errno. */
int64_t sc_pipe_set_size(int fd, uint64_t bytes);
/* F_GETPIPE_SZ: the pipe's capacity in bytes, or -errno (-EBADF, -EINVAL: not a pipe). */
int64_t sc_pipe_get_size(int fd);

/* ---- sinks (native/device_sink.c, ...) ---------------------------------------------------
 * Consumers of the engine's output ring on the consumer clock (see streamcore/sinks/base.py).
 * The device sink is a PortAudio stream callback written in C: sounddevice hands PortAudio
 * &sc_device_sink_callback with an sc_device_sink * as userdata, so no Python runs in the
 * audio thread.  PortAudio's own types are spelled out here without portaudio.h (only the
 * library is installed): PaStreamCallbackTimeInfo is three doubles, the status flags an
 * unsigned long (the PortAudio ABI, hence not a fixed-width type), the return paContinue (0).
 */

/* PaStreamCallbackFlags bits (portaudio.h). */
#define SC_PA_INPUT_UNDERFLOW 1
#define SC_PA_INPUT_OVERFLOW 2
#define SC_PA_OUTPUT_UNDERFLOW 4
#define SC_PA_OUTPUT_OVERFLOW 8
#define SC_PA_PRIMING_OUTPUT 16
/* PaStreamCallbackResult */
#define SC_PA_CONTINUE 0
/* Callback-duration histogram buckets (same rule as the engine's SC_HIST_BUCKETS). */
#define SC_HIST_BUCKETS_SINK 40

/* Same layout as PaStreamCallbackTimeInfo. */
typedef struct sc_pa_time_info {
    double input_adc_time;
    double current_time;
    double output_dac_time;
} sc_pa_time_info;

typedef struct sc_device_sink sc_device_sink;
/* The engine (its typedef is in the engine section below). */
struct sc_engine;

typedef struct sc_device_sink_stats {
    uint64_t callbacks;        /* callbacks that ran (active or not) */
    uint64_t frames;           /* frames handed to PortAudio while active */
    uint64_t ring_frames;      /* of which came from the output ring (the rest: silence) */
    uint64_t periods;          /* whole periods taken (sc_engine_period_consumed calls) */
    uint64_t underruns;        /* callbacks that found the ring short (zeros played) */
    uint64_t underrun_frames;  /* silent frames played because of them */
    uint64_t partial_callbacks;/* callbacks whose frame count was not the blocksize */
    uint64_t output_underflows;/* PortAudio status: paOutputUnderflow */
    uint64_t output_overflows; /* PortAudio status: paOutputOverflow */
    uint64_t priming;          /* PortAudio status: paPrimingOutput */
    uint64_t xruns;            /* callbacks with an underflow or overflow flag (either
                                  direction: one server xrun flags both) */
    uint64_t xrun_frames;      /* frames asked for by those callbacks (a server flags every
                                  callback of its cycle: frames / server period = xruns) */
    uint64_t frames_min, frames_max; /* frame counts PortAudio asked for (0 before any) */
    int64_t duration_min, duration_max, duration_sum; /* the callback's own time, ns */
    uint64_t duration_hist[SC_HIST_BUCKETS_SINK];     /* bucket b: 2^b <= ns < 2^(b+1) */
    int64_t last_callback_ns;  /* CLOCK_MONOTONIC at the last callback's start, 0 before */
    double last_output_dac_time, last_current_time;   /* PortAudio's clock, last callback */
    int64_t callback_tid;      /* kernel tid of the audio thread (read at its first call) */
    int32_t active;
    int32_t finished;          /* PortAudio called sc_device_sink_finished */
    /* Capture (a duplex stream with sc_device_sink_set_capture). */
    uint64_t input_frames;     /* frames captured (lost ones included: the input frame clock) */
    uint64_t input_lost_frames;/* frames the capture ring had no room for (written as zeros
                                  later, so every later frame keeps its index) */
    uint64_t input_overflows;  /* callbacks that lost frames that way */
    uint64_t input_overflow_flags;  /* PortAudio status: paInputOverflow */
    uint64_t input_underflow_flags; /* PortAudio status: paInputUnderflow */
    int64_t io_offset;         /* input frame minus output frame at the last callback's start:
                                  output frame f left in the same callback as input frame
                                  f + io_offset came in */
    uint64_t io_offset_changes;/* times it changed after the first callback (an output
                                  underrun shifts it) */
    double last_input_adc_time;/* PortAudio's clock, last callback */
} sc_device_sink_stats;

/* One callback of the device stream, as PortAudio timed it (sc_device_sink_trace). */
typedef struct sc_device_trace_record {
    int64_t callback_ns;       /* CLOCK_MONOTONIC at the callback's start */
    uint64_t output_frame;     /* the engine frame (output ring index) of its first output */
    uint64_t input_frame;      /* the input frame of its first captured frame (duplex) */
    double input_adc_time;     /* PortAudio's time info (seconds, the stream's clock) */
    double output_dac_time;
    double current_time;
    uint32_t frames;
    uint32_t status;           /* PaStreamCallbackFlags */
} sc_device_trace_record;

#define SC_DEVICE_TRACE_SLOTS 1024

/* A device sink reading periods of `blocksize` frames from `ring` (the engine's output ring)
 * and signalling `engine` (consumer clock).  Memory is mmap'ed, mlocked when possible and
 * prefaulted.  Starts inactive (the callback plays silence and leaves the ring alone).
 * 0, -EINVAL, -ENOMEM. */
int sc_device_sink_create(sc_device_sink **out, struct sc_engine *engine, sc_ring *ring,
                          uint32_t blocksize);
/* Free it (NULL is accepted).  Only after PortAudio closed the stream. */
void sc_device_sink_destroy(sc_device_sink *sink);
/* Start (1) or stop (0) consuming the ring.  After setting 0, wait for the stream to stop
 * (Pa_StopStream) before another reader touches the ring. */
void sc_device_sink_set_active(sc_device_sink *sink, int32_t active);
/* Copy the counters (relaxed reads, each value whole). */
void sc_device_sink_get_stats(const sc_device_sink *sink, sc_device_sink_stats *out);
/* The PortAudio stream callback (PaStreamCallback); userdata is the sc_device_sink *.
 * Realtime-safe: copies, atomics, the clock (vDSO), and the engine's futex wake. */
int sc_device_sink_callback(const void *input, void *output, unsigned long frames,
                            const sc_pa_time_info *time_info, unsigned long status,
                            void *userdata);
/* PaStreamFinishedCallback: records that the stream finished (server gone, stopped). */
void sc_device_sink_finished(void *userdata);
/* Make the stream duplex: the callback writes every captured frame into `capture` (float32,
 * the input channels), gaplessly (sc_ring_write_gapless), as its single writer.  Call while
 * inactive, before the stream starts.  0, -EINVAL. */
int sc_device_sink_set_capture(sc_device_sink *sink, sc_ring *capture);
/* Copy the most recent callback records (oldest first), at most max.  Returns the count. */
int64_t sc_device_sink_trace(const sc_device_sink *sink, sc_device_trace_record *out,
                             uint64_t max);

/* ---- the JACK server, watched (native/jack_host.c) ----------------------------------------
 * A JACK client of our own, without ports or process callback, that hears what the server
 * tells every client: xruns, period (buffer size) changes, shutdown.  libjack is dlopen()ed
 * (JACK2's, or PipeWire's pipewire-jack when LD_LIBRARY_PATH points there), so the core does
 * not link against it.  The callbacks run on libjack's notification thread and only store
 * atomics; Python reads them from a normal thread.
 */
typedef struct sc_jack_watch sc_jack_watch;

typedef struct sc_jack_watch_stats {
    uint64_t xruns;            /* the server's xrun notifications since open */
    uint32_t period;           /* the server's period (buffer size) now, frames */
    uint32_t samplerate;       /* Hz */
    uint64_t period_changes;   /* buffer-size notifications that changed the period */
    int32_t shutdown;          /* the server shut down or dropped this client */
} sc_jack_watch_stats;

/* Open and activate a client named `client_name` on `server` (NULL: the default server),
 * never starting a server.  0; -ENOENT (no libjack), -ENOSYS (a libjack without the calls
 * needed), -ECONNREFUSED (no server answers), -ENOMEM. */
int sc_jack_watch_open(sc_jack_watch **out, const char *server, const char *client_name);
/* From now on a period change sets `engine`'s fill (sc_engine_set_fill) from the
 * notification itself, before the server's first cycle of the new period: a server period
 * (at least `taken_min` frames, what PortAudio takes at once) plus one `blocksize` period,
 * never under `base_fill`.  The engine must outlive the watch (close it first).  NULL engine
 * or blocksize 0: stop following.  Set before the period may change (no lock with the
 * notification thread beyond the engine pointer's release store). */
void sc_jack_watch_follow(sc_jack_watch *watch, struct sc_engine *engine, uint32_t blocksize,
                          uint32_t base_fill, uint32_t taken_min);
/* Deactivate and close the client (unless the server is gone) and free it.  NULL accepted. */
void sc_jack_watch_close(sc_jack_watch *watch);
void sc_jack_watch_get_stats(const sc_jack_watch *watch, sc_jack_watch_stats *out);
/* The playback latency range (frames) over the output ports whose full names match the
 * extended regular expression `port_regex`: the smallest min and the largest max.  Returns
 * the number of ports found (0: none, *min = *max = 0) or -ENOTCONN after a shutdown. */
int sc_jack_watch_playback_latency(sc_jack_watch *watch, const char *port_regex,
                                   uint32_t *min, uint32_t *max);
/* libjack's version string ("" when it has none). */
const char *sc_jack_watch_version(const sc_jack_watch *watch);

/* ---- engine: mixer, voices, watchdog, telemetry (native/mixer.c, watchdog.c, ...) -------
 */

/* One engine = one mixer (voices, command and return queues), its clock, its telemetry and its
 * watchdog.  Python (streamcore/engine.py) is the only caller of the control functions; the
 * mixer thread and the sinks call only what is marked RT-safe.  Concurrency: the command
 * queue has ONE producer (Python serialises its threads with a lock) and one consumer (the
 * mixer); the return, trace and event queues have one producer (mixer, mixer, watchdog) and
 * one consumer (Python). */

typedef struct sc_engine sc_engine;

#define SC_MAX_VOICES 256
/* Periods in the output ring: a pipe sink needs two pipe-sized halves, which at small
 * blocksizes and a 1 MiB pipe are thousands of periods. */
#define SC_MAX_PERIODS 8192
#define SC_MAX_CHANNELS 32
#define SC_MIN_BLOCKSIZE 16
#define SC_MAX_BLOCKSIZE 8192
#define SC_MIN_SAMPLERATE 8000
#define SC_MAX_SAMPLERATE 384000
#define SC_COMMAND_SLOTS 1024
#define SC_TRACE_SLOTS 8192
#define SC_EVENT_SLOTS 64
/* Histogram bucket b counts values v (ns) with 2^b <= v < 2^(b+1); bucket 0 also holds 0. */
#define SC_HIST_BUCKETS 40


/* What wakes the mixer, when the engine starts without a sink's own driver (driver.h). */
#define SC_CLOCK_MANUAL 0    /* no thread: sc_engine_render() renders in the caller */
#define SC_CLOCK_TIMER 1     /* a CLOCK_MONOTONIC deadline per period, which takes (discards)
                                one period from the output ring, as a device would: the null sink */
#define SC_CLOCK_CONSUMER 2  /* a sink's thread calls sc_engine_periods_consumed() */

/* What the engine renders when nothing plays (sc_engine_config.content).  A device is a clock:
 * time passes and silence is audio.  A pipe, a file or an offline render is not: it gets what
 * the voices give, no silence before the first voice, none while idle, and a stream voice's
 * missing data is waited for, not played as silence ("Streams have ends", DESIGN.md). */
#define SC_CONTENT_CLOCK 0   /* render every period the clock asks for (device, null, external) */
#define SC_CONTENT_ONLY 1    /* render only while a voice plays; hold (render nothing) else */
#define SC_CONTENT_PACED 2   /* hold until the first voice, then render every period (a paced
                                live stream: silence between voices is time passing) */

#define SC_VOICE_BUFFER 1    /* frames read in place from caller memory (float32) */
#define SC_VOICE_STREAM 2    /* frames read from an sc_ring (float32) */
#define SC_VOICE_RECORD 3    /* a recording: the mixer writes captured frames into `data`
                                (frames x the input channels, float32); start_frame is an
                                input frame; no output */

#define SC_CMD_ADD 1
#define SC_CMD_STOP 2        /* fade out over fade_frames, then return; from output frame
                                start_frame exactly when it is a frame still to render */
#define SC_CMD_SET 3         /* new gain and pan, ramped over one block; or, for an output
                                frame start_frame still to render, a step exactly there */
#define SC_CMD_SNAPSHOT 4    /* copy the stats at the end of this cycle; token in `generation` */
#define SC_CMD_FINISH 5      /* stream voices: play what the ring holds, then end (FINISHED) */

#define SC_END_FINISHED 1    /* a one-shot buffer played to its end, or a finished stream drained */
#define SC_END_STOPPED 2     /* stopped (after its fade) */
#define SC_END_FLUSHED 3     /* the engine stopped while the voice was active */
#define SC_END_LATE 4        /* a recording whose first frame had already gone by, or a voice
                                added with SC_LATE_REFUSE for a frame already rendered */

/* What a voice whose start frame was already rendered does (sc_command.late). */
#define SC_LATE_PLAY 0       /* play from its first frame, now (late) */
#define SC_LATE_SKIP 1       /* skip the frames already due: play on as if started in time */
#define SC_LATE_REFUSE 2     /* do not play: handed back at once with SC_END_LATE */

/* Taints: set once, never cleared for the engine's life. */
#define SC_TAINT_RT_DENIED 1
#define SC_TAINT_MLOCK_FAILED 2
#define SC_TAINT_WATCHDOG_DEMOTED 4
#define SC_TAINT_RTTIME_SIGNAL 8
#define SC_TAINT_XRUN 16
#define SC_TAINT_CLIPPED 32
#define SC_TAINT_NONFINITE_OUTPUT 64 /* the mix overflowed to Inf/NaN: written as 0, counted */
#define SC_TAINT_UNDERRUN 128 /* a stream voice's producer fell behind: silence was played */
#define SC_TAINT_REALTIME_LOST 256 /* someone else (rtkit's canary, an admin's chrt) took the
                                      mixer's realtime policy away while it ran */

/* Why the watchdog demoted. */
#define SC_DEMOTE_NONE 0
#define SC_DEMOTE_OVERRUNS 1   /* budget exceeded overruns_in_row cycles in a row */
#define SC_DEMOTE_HARD_LIMIT 2 /* one cycle longer than the hard limit (also while still running) */
#define SC_DEMOTE_CANARY 3     /* the SCHED_OTHER canary starved for canary_ns */
#define SC_DEMOTE_RTTIME 4     /* SIGXCPU: soft RLIMIT_RTTIME reached */
#define SC_DEMOTE_OUTSIDE 5    /* not a demotion of ours: the watchdog found the mixer, realtime
                                  at its last look, no longer realtime (an event, no action) */

/* Per-period trace flags. */
#define SC_TRACE_XRUN 1
#define SC_TRACE_DEMOTED 2
#define SC_TRACE_PIPE 4      /* the mixer wrote a pipe itself: no wake-up latency (late_ns 0) */

typedef struct sc_engine_config {
    uint32_t samplerate;
    uint32_t blocksize;        /* frames per period */
    uint32_t channels;
    uint32_t periods;          /* periods kept in the output ring (>= 2) */
    uint32_t format;           /* SC_FORMAT_* */
    uint32_t clock;            /* SC_CLOCK_* */
    int32_t lock_memory;       /* mlock the engine's memory and the mixer's stack */
    int32_t watchdog;          /* start the watchdog and canary threads */
    uint32_t overruns_in_row;  /* demote after this many over-budget cycles in a row */
    int64_t budget_ns;         /* a cycle longer than this is an overrun */
    int64_t hard_limit_ns;     /* one cycle longer than this demotes */
    int64_t canary_ns;         /* canary silent this long: demote every RT thread */
    int64_t watchdog_interval_ns; /* how often the watchdog looks */
    int32_t dither;            /* int16 output: add TPDF dither (±1 LSB triangular) */
    uint32_t seed;             /* the dither's generator seed (0: a fixed default) */
    uint32_t content;          /* SC_CONTENT_*: what is rendered while no voice plays */
} sc_engine_config;

/* A command for the mixer (Python fills it; unused fields are ignored). */
typedef struct sc_command {
    uint32_t op;               /* SC_CMD_* */
    uint32_t slot;             /* voice slot, 0 .. SC_MAX_VOICES-1, owned by Python until returned */
    uint32_t generation;       /* Python's counter for the slot: stale commands are ignored */
    uint32_t kind;             /* SC_VOICE_* (ADD) */
    uint32_t channels;         /* the voice's channels: 1 or the engine's (ADD) */
    uint32_t loop;             /* buffer voices: loop forever (ADD) */
    const float *data;         /* buffer voices: interleaved float32, kept alive by Python (ADD) */
    uint64_t frames;           /* buffer voices: frames in data (ADD) */
    sc_ring *ring;             /* stream voices: the ring to read, kept open by Python (ADD) */
    int64_t start_frame;       /* output frame to start at; negative: the next period (ADD) */
    uint64_t fade_frames;      /* fade-in (ADD) or fade-out (STOP) length in frames */
    float gain;                /* ADD, SET */
    float pan;                 /* -1 left .. +1 right (ADD, SET) */
    uint32_t late;             /* SC_LATE_*: a start_frame already rendered (ADD) */
    uint32_t monitor;          /* stream voices (ADD): 1: the capture step writes the input
                                  into its ring, channel c from input channel input_map[c] */
    uint8_t input_map[SC_MAX_CHANNELS];
    uint32_t mapped;           /* buffer and stream voices (ADD): 1: the voice's channel c
                                  goes to output channel output_map[c] only, at `gain`
                                  (pan 0); entries distinct and below the engine's channels */
    uint8_t output_map[SC_MAX_CHANNELS];
} sc_command;

/* A voice handed back to Python: the slot (and its memory) is Python's again. */
typedef struct sc_voice_return {
    uint32_t slot;
    uint32_t generation;
    uint32_t reason;           /* SC_END_* */
    uint32_t pad;
    uint64_t frames_played;
    uint64_t underruns;        /* stream voices: periods that found too few frames */
    uint64_t underrun_frames;  /* silent frames played because of them */
    uint64_t nonfinite;        /* blocks silenced because the source held NaN/Inf */
    int64_t start_frame;       /* the frame it started at (an input frame for a recording) */
} sc_voice_return;

/* Live counters of one voice slot (read while the mixer runs; relaxed). */
typedef struct sc_voice_stats {
    uint32_t generation;
    uint32_t active;
    uint64_t frames_played;
    uint64_t underruns;
    uint64_t underrun_frames;
    uint64_t nonfinite;
    int64_t start_frame;       /* valid when generation is the voice's (the ADD was applied) */
} sc_voice_stats;

/* One record per mixer cycle. */
typedef struct sc_trace_record {
    uint64_t cycle;
    int64_t wake_ns;           /* CLOCK_MONOTONIC when the mixer woke */
    int64_t late_ns;           /* wake_ns minus the deadline (or the consumer's signal time) */
    int64_t mix_ns;            /* time from wake-up to the end of the cycle's work */
    uint32_t fill;             /* frames in the output ring after the cycle */
    uint32_t voices;           /* voices active at the end of the cycle */
    uint32_t flags;            /* SC_TRACE_* */
    uint32_t rendered;         /* periods rendered in this cycle */
} sc_trace_record;

typedef struct sc_engine_stats {
    uint64_t cycles;           /* mixer wake-ups that did work (== histogram counts) */
    uint64_t periods;          /* periods rendered (prefill included) */
    uint64_t consumed;         /* periods the sink took */
    uint64_t skipped;          /* timer periods missed entirely (the mixer woke > 1 period late) */
    uint64_t xruns;            /* cycles where the sink found less than a period, or skipped */
    uint64_t frames;           /* output frames rendered: the engine's frame clock */
    uint64_t clipped;          /* output samples outside [-1, 1] */
    uint64_t nonfinite;        /* voice blocks silenced because of NaN/Inf */
    uint64_t underruns;        /* stream-voice underruns (all voices) */
    uint64_t late_starts;      /* voices whose start frame had already passed */
    uint64_t commands;         /* commands applied */
    uint64_t overruns;         /* cycles longer than the budget */
    uint64_t sigxcpu;          /* SIGXCPU signals caught */
    uint64_t demotions;
    uint64_t realtime_losses;  /* times the mixer lost realtime to someone else (SC_DEMOTE_OUTSIDE) */
    uint64_t output_nonfinite; /* output samples that were Inf/NaN in the mix, written as 0 */
    int64_t start_ns;          /* the timer clock's origin: deadline k is start_ns + k*period */
    int64_t late_min, late_max, late_sum;
    int64_t mix_min, mix_max, mix_sum;
    uint64_t late_hist[SC_HIST_BUCKETS];
    uint64_t mix_hist[SC_HIST_BUCKETS];
    uint32_t voices;           /* active now */
    uint32_t taints;           /* SC_TAINT_* */
    uint32_t fill;             /* output frames buffered after the last cycle */
    uint32_t running;
    int32_t driver_error;      /* errno that ended the mixer's driver (EPIPE: reader gone), or 0 */
    int32_t mixer_done;        /* the mixer left its loop on its own (its driver stopped or failed) */
    int64_t mixer_tid, watchdog_tid, canary_tid;
    uint64_t run_frames;       /* frames rendered since the last start (prefill included) */
    uint64_t voiced_frames;    /* ... up to the last frame any voice played */
    int64_t end_frame;         /* after sc_engine_drain(): the run's last frame + 1, once every
                                  voice ended (-1 before); nothing is rendered after it */
    uint64_t holds;            /* cycles that rendered nothing for want of content */
    /* Capture (sc_engine_set_input). */
    uint64_t input_frames;     /* input frame clock: the next captured frame to distribute */
    uint64_t input_gaps;       /* cycles that found frames lost by the capture (overflow) */
    uint64_t tap_frames;       /* frames written to the input tap (lost ones included) */
    uint64_t tap_overflows;    /* cycles whose frames did not all fit in the tap (its reader
                                  is behind): they are lost (zeros in their place) */
    uint64_t tap_lost_frames;
    uint32_t recordings;       /* recordings active now */
    int32_t tap_armed;
    uint64_t monitor_dropped;  /* captured frames a monitor voice's ring had no room for */
    int64_t tap_origin;        /* since the tap was last armed: tap index i holds input frame
                                  i + tap_origin (-1 before the first frame went in) */
} sc_engine_stats;

/* A watchdog demotion. */
typedef struct sc_event {
    int64_t time_ns;
    uint32_t reason;           /* SC_DEMOTE_* */
    int32_t policy_before;     /* the thread's sched policy before (sched_getscheduler) */
    int64_t tid;               /* the demoted thread (the mixer; CANARY demotes all RT threads) */
    int64_t busy_ns;           /* how long the current cycle had run, 0 if idle */
    uint64_t streak;           /* over-budget cycles in a row */
    int64_t canary_age_ns;     /* time since the canary last ran */
    uint64_t cycle;            /* the mixer's cycle count then */
    int32_t result;            /* 0 or -errno of the demotion */
    uint32_t threads;          /* how many threads were demoted */
} sc_event;

/* The watchdog's state machine, pure (tested on data; the thread calls it each look). */
typedef struct sc_watchdog_input {
    int64_t now_ns;
    int64_t busy_since_ns;     /* start of the mixer's current cycle, 0 if it is waiting */
    int64_t canary_ns;         /* the canary's last cheep */
    uint64_t streak;           /* the mixer's over-budget cycles in a row */
    uint64_t sigxcpu;          /* SIGXCPU signals so far */
    uint64_t hard_overruns;    /* completed cycles longer than the hard limit so far */
    int32_t mixer_realtime;    /* the mixer runs SCHED_FIFO/RR now (the cycle rules need it) */
    uint32_t cycle_periods;    /* periods the current cycle set out to render (0 counts as 1):
                                  the hard limit is per period of audio rendered */
} sc_watchdog_input;

typedef struct sc_watchdog_state {
    int32_t mixer_demoted;     /* set by a demotion, cleared by sc_engine_rearm() */
    int32_t canary_tripped;    /* set by a canary demotion, cleared by rearm */
    uint32_t loss_reported;    /* 1 + the grant count when SC_DEMOTE_OUTSIDE was reported; 0
                                  once realtime is seen again (or no loss yet) */
    uint64_t sigxcpu_seen;
    uint64_t hard_overruns_seen;
} sc_watchdog_state;

/* The reason (SC_DEMOTE_*) to demote now, updating the state; SC_DEMOTE_NONE otherwise.
 * Each reason fires once until rearmed, so a demoted engine is not demoted again. */
uint32_t sc_watchdog_decide(const sc_engine_config *config, sc_watchdog_state *state,
                            const sc_watchdog_input *input);

/* Validate the config, allocate (and, with lock_memory, mlock and prefault) the engine.
 * 0, -EINVAL (a field out of range), -ENOMEM.  A failed mlock sets SC_TAINT_MLOCK_FAILED. */
int sc_engine_create(sc_engine **out, const sc_engine_config *config);
/* Stops it if running, then frees it.  NULL is accepted. */
void sc_engine_destroy(sc_engine *engine);
/* What wakes the mixer when a sink brings its own (see native/driver.h); opaque here. */
typedef struct sc_driver sc_driver;
/* Start the mixer (and the watchdog and canary when configured), writing into `output`
 * (a ring of the engine's channels and format, capacity >= periods*blocksize).  `driver` is a
 * sink's own driver, or NULL for the engine's clock (config.clock): it is used from here until
 * sc_engine_stop returns, and must stay alive that long.  The initial periods are rendered here,
 * in the caller.  Returns once the threads have published their tids.  -EINVAL for the manual
 * clock or a wrong ring, -EALREADY if running, -errno of the driver's attach or of the
 * threads' start. */
int sc_engine_start(sc_engine *engine, sc_ring *output, const sc_driver *driver);
/* Ask the threads to finish and join them; active voices stay (see sc_engine_flush). */
int sc_engine_stop(sc_engine *engine);
/* RT-safe, for sinks on the consumer clock: a period was taken from the output ring
 * (underrun: it held less than a period).  Wakes the mixer now (futex). */
void sc_engine_period_consumed(sc_engine *engine, int32_t underrun);
/* The same for `periods` periods taken at once, with one wake (a pipe sink hands over halves
 * of many periods). */
void sc_engine_periods_consumed(sc_engine *engine, uint32_t periods, int32_t underrun);
/* Not running: hand every active voice back with SC_END_FLUSHED.  -EBUSY if running. */
int sc_engine_flush(sc_engine *engine);
/* Manual clock: render `periods` periods into dst (periods*blocksize frames of the output
 * format), in the calling thread.  Returns periods rendered; -EINVAL if not manual. */
int64_t sc_engine_render(sc_engine *engine, void *dst, uint32_t periods);
/* Queue a command (single producer).  0, -EAGAIN when the queue is full, -EINVAL.  Wakes a
 * mixer that holds for want of content. */
int sc_engine_command(sc_engine *engine, const sc_command *command);
/* "Play what is queued, then end": once every voice has ended (commands queued before this
 * call included), the mixer publishes the end (sc_engine_end_frame) and renders nothing more
 * in this run.  A sink that is not a clock writes exactly up to it and then ends its run.
 * Any thread; idempotent.  A start begins a new run without it. */
void sc_engine_drain(sc_engine *engine);
/* After sc_engine_drain: the run's end, in frames of this run's output (the last frame any
 * voice played + 1); -1 while voices still play or before a drain. */
int64_t sc_engine_end_frame(const sc_engine *engine);
/* How far into this run a sink that is not a clock may hand the output on now: the end once
 * known; else, for SC_CONTENT_ONLY, the last frame a voice played so far (the silence after
 * it goes only if more audio follows); else everything rendered (UINT64_MAX). */
uint64_t sc_engine_deliverable(const sc_engine *engine);
/* The engine's frame count when the current run started: the output ring's write index then
 * (every frame the engine renders goes into its one output ring), so a sink finds the run's
 * frame 0 in the ring, past what an earlier run left unsent. */
uint64_t sc_engine_run_start(const sc_engine *engine);
/* The frames the mixer keeps rendered ahead in the output ring (periods * blocksize at
 * start).  A sink whose host changed its period while running raises it (any thread; the
 * mixer reads it at its next cycle): a multiple of the blocksize, at least two periods, at
 * most the output ring's capacity; raising it wakes a mixer waiting for its consumer (one
 * futex wake: realtime-safe).  0, -EINVAL (not whole periods, under two), -ENOSPC (more
 * than the ring holds, or no output ring yet). */
int sc_engine_set_fill(sc_engine *engine, uint32_t frames);
uint32_t sc_engine_fill(const sc_engine *engine);
/* Capture (a duplex device sink): `capture` is written by the sink (its callback), read by the
 * mixer, which at the start of each cycle hands every frame to the recordings
 * (SC_VOICE_RECORD voices) and, while armed, to `tap` (the public input ring, whose reader is
 * the application: a full tap loses frames, counted, and writes zeros in their place later).
 * Both float32 with the input channels; either may be NULL (no capture).  Stopped engine
 * only: -EBUSY while running, -EINVAL for a wrong ring. */
int sc_engine_set_input(sc_engine *engine, sc_ring *capture, sc_ring *tap);
/* Start (1) or stop (0) writing the tap (any thread; the mixer reads it each cycle).  An
 * arming after a stop starts anew: frames lost before are not owed, and tap_origin (stats)
 * is -1 until the mixer wrote the first frame of the new arming. */
void sc_engine_arm_tap(sc_engine *engine, int32_t armed);
/* The input level meters: each channel's largest |sample| since the last call (then reset),
 * into out[0 .. channels-1]; returns the channels (0 without capture).  Any one thread. */
uint32_t sc_engine_input_peaks(sc_engine *engine, float *out, uint32_t max);
/* 1 while the mixer runs its loop (started, not stopped, and not ended by its driver). */
int32_t sc_engine_mixing(const sc_engine *engine);
/* The input frame clock: every captured frame before it has been distributed. */
uint64_t sc_engine_input_frame(const sc_engine *engine);
/* 1 once the mixer handed back that generation of the slot (its ring was woken after this
 * was set, before the return is published): a woken writer looks here, not at the returns. */
int32_t sc_engine_voice_ended(const sc_engine *engine, uint32_t slot, uint32_t generation);
/* Take one returned voice: 1 (out filled) or 0 (none). */
int sc_engine_poll_return(sc_engine *engine, sc_voice_return *out);
/* Copy the live counters of one slot.  0 or -EINVAL. */
int sc_engine_voice_stats(const sc_engine *engine, uint32_t slot, sc_voice_stats *out);
/* Copy the aggregates (relaxed reads: consistent once the engine is stopped). */
void sc_engine_get_stats(const sc_engine *engine, sc_engine_stats *out);
/* The stats the mixer copied at the end of the cycle that applied an SC_CMD_SNAPSHOT: a
 * readout consistent to one cycle.  Returns the token of the copy in out (0: none yet).
 * One requester at a time (Python's lock): the mixer writes a copy only when asked. */
uint32_t sc_engine_get_snapshot(const sc_engine *engine, sc_engine_stats *out);
/* Copy the most recent trace records (oldest first), at most max.  Returns the count. */
int64_t sc_engine_trace(const sc_engine *engine, sc_trace_record *out, uint64_t max);
/* Take one watchdog event: 1 or 0. */
int sc_engine_poll_event(sc_engine *engine, sc_event *out);
/* An eventfd (nonblocking) the watchdog writes once per event: poll/select it to subscribe. */
int sc_engine_event_fd(const sc_engine *engine);
/* An eventfd (nonblocking) the mixer writes once per voice it hands back while ends are
 * watched (sc_engine_watch_ends(e, 1)): poll it, then sc_engine_poll_return. */
int sc_engine_end_fd(const sc_engine *engine);
void sc_engine_watch_ends(sc_engine *engine, int32_t watch);
/* An eventfd (nonblocking) the mixer writes at the end of every cycle that rendered while
 * watchers are counted (sc_engine_watch_progress(e, +1) / -1): an event loop watches it to
 * learn that stream voices' rings have room again, without a thread. */
int sc_engine_progress_fd(const sc_engine *engine);
void sc_engine_watch_progress(sc_engine *engine, int32_t delta);
/* Set taint bits (Python sets RT_DENIED). */
void sc_engine_taint(sc_engine *engine, uint32_t taints);
/* After a re-promotion: let the watchdog demote again. */
void sc_engine_rearm(sc_engine *engine);
/* The realtime policy (SCHED_FIFO, SCHED_RR) the mixer was granted, or -1: from then on the
 * watchdog reports the mixer found without it, not by its own demotion (SC_DEMOTE_OUTSIDE),
 * once per loss. */
void sc_engine_set_granted(sc_engine *engine, int32_t policy);
/* Test hook: the next `cycles` cycles busy-loop for `spin_ns` each before mixing. */
void sc_engine_test_spin(sc_engine *engine, int64_t spin_ns, uint32_t cycles);


/* ---- tap writer (native/tap_writer.c) -------------------------------------------------
 * A C thread that writes what a float32 ring holds (the engine's input tap) to a file
 * descriptor, a pipe, FIFO, socket or regular file, as float32 or int16 (rounded, clipped):
 * the capture leaves the process with no Python in the data path.  `frames` > 0: exactly that
 * many, then it is finished (and drops what the ring gets until stopped, so the ring's
 * writer never finds it full); 0: until stopped.  The thread is the ring's single reader
 * from start to stop.  A stalled reader is waited for in poll() with the stop eventfd:
 * stopping never hangs.  A write error (EPIPE: the reader went away) ends it (error).
 */
typedef struct sc_tap_writer sc_tap_writer;

typedef struct sc_tap_writer_stats {
    uint64_t frames;           /* frames written (and released from the ring) */
    uint64_t bytes;            /* bytes written */
    uint64_t waits;            /* times the ring was empty */
    int32_t error;             /* errno that ended it, or 0 */
    int32_t running;
    int32_t finished;          /* wrote all `frames` */
} sc_tap_writer_stats;

/* 0, -EINVAL (not a float32 ring, a bad fd or format), -EBADF, -ENOMEM. */
int sc_tap_writer_create(sc_tap_writer **out, sc_ring *ring, int fd, uint64_t frames,
                         uint32_t format);
int sc_tap_writer_start(sc_tap_writer *writer);
/* Stop the thread (a chunk half written to a stalled reader stays in the ring) and join it. */
int sc_tap_writer_stop(sc_tap_writer *writer);
void sc_tap_writer_destroy(sc_tap_writer *writer);
void sc_tap_writer_get_stats(const sc_tap_writer *writer, sc_tap_writer_stats *out);
/* An eventfd the thread writes when it has written all `frames`, and when it ends (an error,
 * a stop): poll it to wait for either without polling the stats. */
int sc_tap_writer_done_fd(const sc_tap_writer *writer);


/* ---- pipe sink (native/pipe_sink.c) ----------------------------------------------------
 * Hands the engine's output to a pipe, a FIFO, a file or a socket, exactly: the run's frames up
 * to the engine's end (sc_engine_drain), nothing after.  Zero copy (opt-in for pipes):
 * periods are vmspliced as they are rendered, and a page goes back to the mixer only once it
 * has left every pipe it went into (FIONREAD: only the last bytes sent can still be in it).
 * Straight into a pipe (no relay, no tee) the engine's mixer thread is the writer, through the
 * sink's driver (sc_pipe_sink_driver) given to sc_engine_start(); otherwise a C thread of the
 * sink is, from sc_pipe_sink_start() to sc_pipe_sink_stop().  With
 * `onward_fd` >= 0, `fd` is the sink's own relay pipe and everything goes on to `onward_fd`
 * (a regular file, or a pipe when a tee pipe gets a copy by tee()).  Copy mode (`zero_copy`
 * 0) write()s each period instead.  Stopping never hangs on a stalled reader: all waits poll
 * a stop eventfd too.
 */
typedef struct sc_pipe_sink sc_pipe_sink;

typedef struct sc_pipe_sink_stats {
    uint64_t bytes;            /* bytes handed to the pipe (or file) */
    uint64_t halves;           /* halves handed over with vmsplice */
    uint64_t writes;           /* write() calls (copy mode, header, final partial flush) */
    uint64_t periods;          /* periods taken from the output ring */
    uint64_t reader_waits;     /* times the pipe was full: the reader is slower than us */
    uint64_t mixer_waits;      /* times too little was rendered and the sink slept */
    int32_t error;             /* the errno that ended the sink (EPIPE: reader gone), or 0 */
    int32_t running;
    int32_t zero_copy;
    int32_t finished;          /* the writer ended (error, or stopped) */
    int32_t by_mixer;          /* the mixer writes the pipe itself (no writer thread) */
    int32_t paced;             /* handed over at the sample rate (sc_pipe_sink_pace) */
    int32_t run_complete;      /* the engine's end is known and every frame up to it went out */
    uint64_t resized;          /* times a pipe holding our pages was found enlarged */
} sc_pipe_sink_stats;

/* `ring` is the engine's output ring (the sink is its single reader from start to stop).
   With a relay (a file target, or a tee): `fd` is the write end of the sink's relay pipe,
   `relay_fd` its read end and `onward_fd` the target; otherwise both are -1.  `tee_fd` (or -1)
   gets the same bytes: by tee() from the relay with zero copy (then it must be a pipe of the
   same size), else by a second write(). */
int sc_pipe_sink_create(sc_pipe_sink **out, sc_engine *engine, sc_ring *ring, int fd,
                        int relay_fd, int onward_fd, int tee_fd, uint64_t half_frames,
                        uint32_t blocksize, int zero_copy);
/* The sink's own driver for sc_engine_start when the mixer writes the pipe itself (straight
   into a pipe, no relay, no tee; a copy needs RWF_NOWAIT for pipes), else NULL (a thread of the sink writes; the engine
   runs on its consumer clock).  Lives as long as the sink. */
const sc_driver *sc_pipe_sink_driver(sc_pipe_sink *sink);
/* Write `len` bytes (a stream header) before the first period; call before start. */
int sc_pipe_sink_prefix(sc_pipe_sink *sink, const void *data, uint64_t len);
/* Pace the stream at `samplerate` frames per second, `lead_frames` ahead of the clock, which
   starts with the run's first frame (before start; 0: as fast as the reader takes it). */
int sc_pipe_sink_pace(sc_pipe_sink *sink, uint32_t samplerate, uint64_t lead_frames);
int sc_pipe_sink_start(sc_pipe_sink *sink);
/* Stop the writer (joins the thread, or waits for the mixer to let go; -ETIMEDOUT after 5 s).
   With `flush`, what the output ring holds and the pipe has not got yet is written by copy. */
int sc_pipe_sink_stop(sc_pipe_sink *sink, int flush);
void sc_pipe_sink_destroy(sc_pipe_sink *sink);
void sc_pipe_sink_get_stats(const sc_pipe_sink *sink, sc_pipe_sink_stats *out);
