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


/* ---- engine: mixer, voices, watchdog, telemetry (native/mixer.c, watchdog.c, ...) -------
 */

