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


/* ---- engine: mixer, voices, watchdog, telemetry (native/mixer.c, watchdog.c, ...) -------
 */

