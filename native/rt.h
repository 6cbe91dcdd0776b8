/*
 * rt.h: the realtime primitives every other part of the C core uses, in one place.
 *
 * - counters with one writer and any number of readers (relaxed, each value whole);
 * - the monotonic clock (vDSO: no syscall);
 * - log2 histograms of durations (one writer);
 * - futex wait (absolute CLOCK_MONOTONIC deadline) and wake;
 * - SIGPIPE blocked for the calling thread (a vanished reader is EPIPE, not death);
 * - locked mappings: anonymous memory mapped, written once (prefaulted) and mlocked;
 * - a thread with a locked, prefaulted stack whose kernel tid is known when start returns.
 *
 * Internal to native/ (not the Python contract): it includes system headers, which cffi's
 * cdef cannot parse.  Nothing here allocates, logs or locks on a realtime path; the mapping
 * and thread functions are for the control threads only.
 */
#ifndef STREAMCORE_RT_H
#define STREAMCORE_RT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SC_CACHELINE 64

/* ---- counters: single writer, so a relaxed load + store is enough (no locked add) ------- */
typedef _Atomic uint64_t sc_counter;
typedef _Atomic int64_t sc_scounter;

static inline void sc_count(sc_counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t sc_read(const sc_counter *c)
{
    return atomic_load_explicit((sc_counter *)c, memory_order_relaxed);
}

static inline int64_t sc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no syscall */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- overwrite logs: records in `slots` (a power of two) slots, one writer that never
 * waits: it fills slot written % slots, then release-stores written + 1.  A reader copies the
 * newest and re-reads `written` to drop the records that may have been overwritten meanwhile,
 * so it never returns a torn one.  Returns the records copied into out (oldest first). */
int64_t sc_overwrite_log_copy(const void *records, size_t record_bytes, uint64_t slots,
                              const _Atomic uint64_t *written, void *out, uint64_t max);

/* ---- histograms: bucket b counts values v (ns) with 2^b <= v < 2^(b+1); bucket 0 also
 * holds 0, 1 and negative values (an early wake-up).  Same rule as SC_HIST_BUCKETS. */
#define SC_RT_HIST_BUCKETS 40
typedef struct sc_histogram {
    sc_counter count;
    sc_scounter min, max, sum;
    sc_counter buckets[SC_RT_HIST_BUCKETS];
} sc_histogram;

void sc_histogram_reset(sc_histogram *h);
/* One writer.  count is stored last, with release: who sees count n sees sample n. */
void sc_histogram_add(sc_histogram *h, int64_t value);
/* Copy out (any thread); min/max are 0 while empty. */
void sc_histogram_read(const sc_histogram *h, uint64_t *count, int64_t *min, int64_t *max,
                       int64_t *sum, uint64_t buckets[SC_RT_HIST_BUCKETS]);

/* ---- futex on a 32-bit word (private to the process) ------------------------------------ */
/* Sleep while *word == expected, until deadline_ns (CLOCK_MONOTONIC); returns at once if it
 * differs.  Spurious returns are allowed: callers re-check their condition. */
void sc_futex_wait_until(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
/* Bump *word and wake its waiters.  RT-safe (one syscall). */
void sc_futex_bump_wake(_Atomic uint32_t *word);

/* ---- signals ----------------------------------------------------------------------------- */
/* Block SIGPIPE for the calling thread, and drop one that our own write left pending. */
void sc_block_sigpipe(void);

/* ---- locked mappings --------------------------------------------------------------------- */
/* Map `bytes` (rounded up to pages) of zeroed anonymous memory, write it once (so no page
 * faults later) and, with `lock`, mlock it.  NULL on failure (errno set).  *locked says
 * whether the mlock took (may be NULL). */
void *sc_locked_map(size_t bytes, int lock, int *locked);
/* munmap what sc_locked_map returned (same `bytes`); NULL is accepted.  Unlocks too. */
void sc_locked_unmap(void *p, size_t bytes);
size_t sc_page_round(size_t bytes);

/* ---- threads whose tid is known and whose stack never faults ----------------------------- */
typedef struct sc_rt_thread {
    pthread_t thread;
    void *stack;            /* NULL: the default stack (a thread that need not be locked) */
    size_t stack_bytes;     /* the mapping, guard page included */
    _Atomic int64_t tid;    /* kernel tid, published by the thread before fn runs */
    int started;
    int stack_locked;
    void *(*fn)(void *);
    void *arg;
    char name[16];
} sc_rt_thread;

/* Start `fn(arg)` on a new thread named `name`; with stack_bytes > 0 on a stack of that size
 * that is mapped, prefaulted and (with `lock`) mlocked, below a guard page.  Returns once the
 * thread's tid is published: 0 or -errno.  A thread already started is -EALREADY. */
int sc_rt_thread_start(sc_rt_thread *t, const char *name, void *(*fn)(void *), void *arg,
                       size_t stack_bytes, int lock);
/* Join it (no-op if not started).  The stack stays mapped for a restart. */
void sc_rt_thread_join(sc_rt_thread *t);
/* Free the stack (after the last join). */
void sc_rt_thread_release(sc_rt_thread *t);
static inline int64_t sc_rt_thread_tid(const sc_rt_thread *t)
{
    return atomic_load_explicit((_Atomic int64_t *)&t->tid, memory_order_acquire);
}

#endif
