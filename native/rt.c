/*
 * rt.c: the realtime primitives of rt.h (histograms, futex, SIGPIPE, locked mappings, threads
 * with a known tid and a locked stack).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rt.h"

void sc_histogram_reset(sc_histogram *h)
{
    atomic_store_explicit(&h->count, 0, memory_order_relaxed);
    atomic_store_explicit(&h->min, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&h->max, INT64_MIN, memory_order_relaxed);
    atomic_store_explicit(&h->sum, 0, memory_order_relaxed);
    for (int b = 0; b < SC_RT_HIST_BUCKETS; b++)
        atomic_store_explicit(&h->buckets[b], 0, memory_order_relaxed);
}

static inline int bucket_of(int64_t value)
{
    if (value <= 1)
        return 0;
    int b = 63 - __builtin_clzll((uint64_t)value);
    return b < SC_RT_HIST_BUCKETS ? b : SC_RT_HIST_BUCKETS - 1;
}

void sc_histogram_add(sc_histogram *h, int64_t value)
{
    if (value < atomic_load_explicit(&h->min, memory_order_relaxed))
        atomic_store_explicit(&h->min, value, memory_order_relaxed);
    if (value > atomic_load_explicit(&h->max, memory_order_relaxed))
        atomic_store_explicit(&h->max, value, memory_order_relaxed);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + value,
                          memory_order_relaxed);
    sc_count(&h->buckets[bucket_of(value)], 1);
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_release);
}

void sc_histogram_read(const sc_histogram *h, uint64_t *count, int64_t *min, int64_t *max,
                       int64_t *sum, uint64_t buckets[SC_RT_HIST_BUCKETS])
{
    sc_histogram *m = (sc_histogram *)h;
    uint64_t n = atomic_load_explicit(&m->count, memory_order_acquire);
    *count = n;
    *min = n ? atomic_load_explicit(&m->min, memory_order_relaxed) : 0;
    *max = n ? atomic_load_explicit(&m->max, memory_order_relaxed) : 0;
    *sum = atomic_load_explicit(&m->sum, memory_order_relaxed);
    for (int b = 0; b < SC_RT_HIST_BUCKETS; b++)
        buckets[b] = sc_read(&m->buckets[b]);
}

void sc_futex_wait_until(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, &ts,
            NULL, FUTEX_BITSET_MATCH_ANY);
}

void sc_futex_bump_wake(_Atomic uint32_t *word)
{
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT32_MAX, NULL, NULL,
            0);
}

void sc_block_sigpipe(void)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) { /* left by an earlier write of this thread */
        struct timespec zero = {0, 0};
        sigtimedwait(&set, NULL, &zero);
    }
}

size_t sc_page_round(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

void *sc_locked_map(size_t bytes, int lock, int *locked)
{
    bytes = sc_page_round(bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, bytes); /* prefault: neither a failed mlock nor a fresh page faults later */
    int ok = lock && mlock(p, bytes) == 0;
    if (locked)
        *locked = ok;
    return p;
}

void sc_locked_unmap(void *p, size_t bytes)
{
    if (p)
        munmap(p, sc_page_round(bytes));
}

static void *thread_main(void *arg)
{
    sc_rt_thread *t = arg;
    prctl(PR_SET_NAME, t->name, 0, 0, 0);
    atomic_store_explicit(&t->tid, (int64_t)syscall(SYS_gettid), memory_order_release);
    return t->fn(t->arg);
}

int sc_rt_thread_start(sc_rt_thread *t, const char *name, void *(*fn)(void *), void *arg,
                       size_t stack_bytes, int lock)
{
    if (t->started)
        return -EALREADY;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (stack_bytes > 0 && t->stack == NULL) {
        size_t bytes = sc_page_round(stack_bytes) + page;
        void *stack = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
            return -errno;
        mprotect(stack, page, PROT_NONE); /* the guard page: an overflow faults, not corrupts */
        t->stack_locked = lock && mlock((char *)stack + page, bytes - page) == 0;
        memset((char *)stack + page, 0, bytes - page);
        t->stack = stack;
        t->stack_bytes = bytes;
    }
    t->fn = fn;
    t->arg = arg;
    strncpy(t->name, name, sizeof t->name - 1);
    t->name[sizeof t->name - 1] = 0;
    atomic_store_explicit(&t->tid, 0, memory_order_relaxed);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (t->stack)
        pthread_attr_setstack(&attr, (char *)t->stack + page, t->stack_bytes - page);
    int rc = pthread_create(&t->thread, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    if (rc)
        return -rc;
    t->started = 1;
    while (sc_rt_thread_tid(t) == 0) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

void sc_rt_thread_join(sc_rt_thread *t)
{
    if (!t->started)
        return;
    pthread_join(t->thread, NULL);
    t->started = 0;
}

void sc_rt_thread_release(sc_rt_thread *t)
{
    if (t->stack) {
        munmap(t->stack, t->stack_bytes);
        t->stack = NULL;
    }
}

int64_t sc_overwrite_log_copy(const void *records, size_t record_bytes, uint64_t slots,
                              const _Atomic uint64_t *written, void *out, uint64_t max)
{
    const char *src = records;
    char *dst = out;
    uint64_t end = atomic_load_explicit((_Atomic uint64_t *)written, memory_order_acquire);
    /* Leave a margin of slots the writer may be filling while we copy. */
    uint64_t window = slots - slots / 128;
    uint64_t n = end < window ? end : window;
    if (n > max)
        n = max;
    uint64_t begin = end - n;
    for (uint64_t i = begin; i < end; i++)
        memcpy(dst + (i - begin) * record_bytes, src + (i & (slots - 1)) * record_bytes,
               record_bytes);
    atomic_thread_fence(memory_order_acquire);
    uint64_t after = atomic_load_explicit((_Atomic uint64_t *)written, memory_order_relaxed);
    /* Records older than after - slots + 1 may have been overwritten mid-copy. */
    uint64_t oldest_safe = after >= slots ? after - slots + 1 : 0;
    if (oldest_safe > begin) {
        uint64_t drop = oldest_safe - begin;
        if (drop >= n)
            return 0;
        memmove(dst, dst + drop * record_bytes, (n - drop) * record_bytes);
        n -= drop;
    }
    return (int64_t)n;
}
