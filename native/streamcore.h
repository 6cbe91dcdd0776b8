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

