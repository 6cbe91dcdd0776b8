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
/* The calling thread's kernel thread id (gettid). */
int64_t sc_gettid(void);
/* Try to mlock (then munlock) `bytes` of fresh memory: 0, or -errno (EPERM, ENOMEM, EAGAIN). */
int sc_probe_mlock(size_t bytes);

/* ---- rings (native/ring.c) -------------------------------------------------------------
 * The mlocked mirrored SPSC ring: see streamcore/ring.py for the concurrency contract.
 * (section owned by the ring work; keep these separator comments so sections merge apart)
 */

/* Sample formats (one sample of one channel). */
#define SC_FORMAT_F32 1
#define SC_FORMAT_S16 2
#define SC_FORMAT_S32 3

/* The shared control block, page 0 of the memfd (the data pages follow it).  Offsets are part
 * of the contract so tools and tests can inspect (or, in tests, attack) a ring from outside. */
#define SC_RING_MAGIC 0x53434F5245524E47
#define SC_RING_VERSION 1
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
/* Mark the ring broken (locally and in the shared header), e.g. when a side gives up. */
void sc_ring_mark_broken(sc_ring *ring);
void sc_ring_get_stats(const sc_ring *ring, sc_ring_stats *out);

/* Test and benchmark drivers (not realtime API): a producer and a consumer pthread on the same
 * handle, run with the GIL released.  Not for a ring that has other users at the same time. */
typedef struct sc_ring_run_result {
    uint64_t frames_written, frames_read;
    uint64_t mismatches;       /* samples that differed from the counting pattern (stress) */
    uint64_t elapsed_ns;       /* from both threads started to both done */
    uint64_t producer_minflt, consumer_minflt;  /* page faults taken inside the two loops */
    uint64_t producer_majflt, consumer_majflt;
    uint64_t producer_waits, consumer_waits;    /* times a side found the ring full / empty */
    uint64_t producer_cpu_ns, consumer_cpu_ns;  /* CPU time of each loop (vs elapsed_ns: how
                                                   much of the run each thread was on a core) */
    int32_t completed;         /* 1 when every frame moved before the deadline */
    int32_t status;            /* 0, or the -errno a ring call or pthread_create returned */
} sc_ring_run_result;
/* Move `frames` frames of a counting pattern (sample n of the stream holds n, truncated to the
 * sample width) in random chunks of 1..max_chunk frames (xorshift seeded by `seed`); the
 * consumer checks every sample.  Stops early after timeout_ns.  0 or -errno. */
int sc_ring_stress(sc_ring *ring, uint64_t frames, uint64_t max_chunk, uint64_t seed,
                   uint64_t timeout_ns, sc_ring_run_result *out);
/* Throughput: the producer memcpy's chunks of chunk_frames from a source buffer into the ring,
 * the consumer memcpy's them out to a sink buffer, until `frames` moved or timeout_ns. */
int sc_ring_pump(sc_ring *ring, uint64_t frames, uint64_t chunk_frames, uint64_t timeout_ns,
                 sc_ring_run_result *out);
/* The reference: one thread memcpy's `total_bytes` in chunks of chunk_bytes from a buffer of
 * buffer_bytes to another (cycling); returns the elapsed ns, or -errno. */
int64_t sc_memcpy_reference(uint64_t total_bytes, uint64_t chunk_bytes, uint64_t buffer_bytes);


/* ---- scheduling (native/sched.c) -------------------------------------------------------
 * Native helpers for realtime acquisition and its tests.
 */

/* The kernel's SCHED_RESET_ON_FORK flag (ORed into a policy). */
#define SC_SCHED_RESET_ON_FORK 1073741824

/* How a thread is scheduled, as the thread itself reads it (sched_getscheduler(0) & co.). */
typedef struct {
    int32_t policy;        /* SCHED_OTHER 0, FIFO 1, RR 2, BATCH 3, IDLE 5: no flag bits */
    int32_t priority;      /* sched_priority; 0 for the normal policies */
    int32_t nice;          /* getpriority() of the thread */
    int32_t reset_on_fork; /* 1 when SCHED_RESET_ON_FORK is set, else 0 */
} sc_sched_info;

/* A native probe thread: a C thread that only waits for requests.  It exists so that Python
 * can promote a thread it did not create (by kernel tid) and let that thread report its own
 * scheduling and fork.  Any thread may send requests; they are serialised by a mutex (the
 * probe is a diagnostic, not a realtime-safe object). */
typedef struct sc_probe_thread sc_probe_thread;

/* Start a probe; *out receives it once its tid is known.  0 or -errno. */
int sc_probe_thread_start(sc_probe_thread **out);
/* The probe's kernel thread id (gettid() as the probe read it). */
int64_t sc_probe_thread_tid(sc_probe_thread *probe);
/* The probe reads its own scheduling into *out.  0 or -errno. */
int sc_probe_thread_read(sc_probe_thread *probe, sc_sched_info *out);
/* The probe forks; the child reads its own scheduling, sends it back and exits; *out is what
 * the child saw (SCHED_RESET_ON_FORK works when it is SCHED_OTHER, nice >= 0).  0 or -errno. */
int sc_probe_thread_fork_read(sc_probe_thread *probe, sc_sched_info *out);
/* Stop the probe, join it and free it (NULL is ignored). */
void sc_probe_thread_stop(sc_probe_thread *probe);


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
/* vmsplice `len` bytes at `data` into pipe `fd`, looping over partial transfers; blocks while
   the pipe is full.  Returns `len`, or -errno (-EPIPE: no reader). */
int64_t sc_pipe_vmsplice(int fd, const void *data, uint64_t len);
/* write() `len` bytes, looping over partial writes: len or -errno. */
int64_t sc_pipe_write(int fd, const void *data, uint64_t len);
/* splice up to `len` bytes from pipe `from` to `to` until `len` moved or end of input:
   bytes moved, or -errno. */
int64_t sc_pipe_splice(int from, int to, uint64_t len);
/* Read and discard from `fd` until end of input (a drain for tests and benchmarks); with
   `use_splice` it splices into `sink_fd` (e.g. /dev/null) instead.  Bytes drained or -errno. */
int64_t sc_pipe_drain(int fd, int use_splice, int sink_fd);

/* The double-buffer protocol on its own: send `total` bytes of a counting pattern of uint32
   words (word i holds i) through pipe `fd`, from `buffer` of 2 x `half` bytes (page-aligned),
   filling a half only after the other half's vmsplice succeeded.  With `zero_copy` 0 it
   write()s instead.  Returns bytes sent or -errno.  A reader checking the pattern detects any
   page rewritten while the pipe still held it. */
int64_t sc_pipe_pump_pattern(int fd, void *buffer, uint64_t half, uint64_t total, int zero_copy);
/* The bare loop, the limit of this machine: send `total` bytes from the two halves of
   `buffer` alternately (vmsplice, or write() with `zero_copy` 0) without touching them. */
int64_t sc_pipe_send_halves(int fd, const void *buffer, uint64_t half, uint64_t total,
                            int zero_copy);
/* Check `len` bytes at `data` as words of the counting pattern starting at byte `offset`:
   returns the number of words that differ. */
uint64_t sc_pattern_mismatches(const void *data, uint64_t len, uint64_t offset);

/* ---- engine: mixer, voices, watchdog, telemetry (native/mixer.c, watchdog.c, ...) -------
 */

