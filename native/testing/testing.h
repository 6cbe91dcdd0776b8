/*
 * testing.h: the contract of streamcore._testing, the test and benchmark drivers (not the
 * shipped API in streamcore.h).  cffi's cdef() parses it as it is, like streamcore.h: only
 * fixed-width types, opaque declarations, prototypes and integer #defines.  The module is
 * built from the .c files of native/testing/ together with the core's ring.c and rt.c (its own copies);
 * a ring handle made by streamcore._native is passed in by address (same source, same
 * layout: see bench/drivers.py).
 */

typedef struct sc_ring sc_ring;

/* ---- rings (native/testing/ring_drivers.c) --------------------------------------------- */
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
/* ---- pipes (native/testing/pipe_drivers.c) --------------------------------------------- */
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

/* ---- scheduling (native/testing/sched_probe.c) -----------------------------------------
 * A thread made in C, for tests of realtime acquisition on threads Python did not create.
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
