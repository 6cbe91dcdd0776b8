/*
 * ring_drivers.c: test and benchmark drivers for the ring (streamcore._testing, not the
 * shipped contract): a producer and a consumer pthread on one handle, run with the GIL
 * released, checking a counting pattern (stress) or moving bytes (pump), and the memcpy
 * reference the benchmarks compare against.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"
#include "testing.h"

/* ---- test and benchmark drivers ---------------------------------------------------------- */

/* Offset of the drivers' own buffers from a page boundary: half a page and a cache line, so
 * memcpy between them and the page-aligned ring does not hit 4K aliasing. */
#define ALIAS_SKEW (2048 + 64)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct run {
    sc_ring *ring;
    uint64_t frames;
    uint64_t max_chunk; /* stress: random 1..max_chunk; pump: exactly this */
    uint64_t seed;
    uint64_t deadline_ns;
    int verify; /* 1: counting pattern (stress), 0: memcpy (pump) */
    uint8_t *src, *dst; /* pump buffers, allocated before the threads start */
    _Atomic int stop;
    /* results, each written by its own thread */
    uint64_t written, read, mismatches, minflt[2], majflt[2], waits[2], cpu_ns[2];
    int32_t status[2];
};

/* Touch the stack a loop may use before counting faults, so the counts are about the ring. */
static __attribute__((noinline)) void prefault_stack(void)
{
    volatile uint8_t pad[32768];
    for (size_t i = 0; i < sizeof(pad); i += 1024)
        pad[i] = 0;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void thread_faults(uint64_t *minflt, uint64_t *majflt)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    *minflt = (uint64_t)ru.ru_minflt;
    *majflt = (uint64_t)ru.ru_majflt;
}

/* Wait for the other side: spin briefly (it is likely running on the other core), then
 * yield, then sleep 20 µs at a time so that on a busy machine, where both threads may share
 * one core, the waiting thread gives the core to the one it waits for.  `idle` counts the
 * waits since the last progress; the caller resets it. */
static void wait_a_little(uint64_t *waits, uint32_t *idle)
{
    ++*waits;
    uint32_t n = (*idle)++;
    if (n < 64)
        cpu_relax();
    else if (n < 64 + 16)
        sched_yield();
    else {
        struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
    }
}

static void fill_pattern(uint8_t *p, uint64_t first_sample, uint64_t samples, uint32_t sbytes)
{
    if (sbytes == 4) {
        uint32_t *s = (uint32_t *)p;
        for (uint64_t i = 0; i < samples; i++)
            s[i] = (uint32_t)(first_sample + i);
    } else {
        uint16_t *s = (uint16_t *)p;
        for (uint64_t i = 0; i < samples; i++)
            s[i] = (uint16_t)(first_sample + i);
    }
}

static uint64_t check_pattern(const uint8_t *p, uint64_t first_sample, uint64_t samples,
                              uint32_t sbytes)
{
    uint64_t bad = 0;
    if (sbytes == 4) {
        const uint32_t *s = (const uint32_t *)p;
        for (uint64_t i = 0; i < samples; i++)
            bad += s[i] != (uint32_t)(first_sample + i);
    } else {
        const uint16_t *s = (const uint16_t *)p;
        for (uint64_t i = 0; i < samples; i++)
            bad += s[i] != (uint16_t)(first_sample + i);
    }
    return bad;
}

/* The end of a side's loop: its faults, CPU time and waits into the result; a side that
 * failed stops the other. */
static void side_done(struct run *run, int side, uint64_t flt0, uint64_t maj0, uint64_t cpu0,
                      uint64_t waits)
{
    uint64_t flt1, maj1;
    thread_faults(&flt1, &maj1);
    run->cpu_ns[side] = thread_cpu_ns() - cpu0;
    run->minflt[side] = flt1 - flt0;
    run->majflt[side] = maj1 - maj0;
    run->waits[side] = waits;
    if (run->status[side] < 0)
        atomic_store_explicit(&run->stop, 1, memory_order_relaxed);
}

static void *producer(void *arg)
{
    struct run *run = arg;
    sc_ring *ring = run->ring;
    const uint32_t fb = sc_ring_frame_bytes(ring), ch = sc_ring_channels(ring);
    const uint32_t sbytes = fb / ch;
    uint64_t state = run->seed | 1, done = 0, waits = 0, src_off = 0;
    uint64_t src_frames = sc_ring_capacity(ring);
    uint32_t idle = 0;
    uint64_t flt0, maj0;
    prefault_stack();
    thread_faults(&flt0, &maj0);
    uint64_t cpu0 = thread_cpu_ns();
    while (done < run->frames && !atomic_load_explicit(&run->stop, memory_order_relaxed)) {
        uint64_t want = run->verify ? 1 + xorshift64(&state) % run->max_chunk : run->max_chunk;
        if (want > run->frames - done)
            want = run->frames - done;
        void *data;
        int64_t k = sc_ring_write_region(ring, want, &data);
        if (k < 0) {
            run->status[0] = (int32_t)k;
            break;
        }
        if (k == 0) {
            wait_a_little(&waits, &idle);
            if ((waits & 1023) == 0 && now_ns() > run->deadline_ns)
                break;
            continue;
        }
        if (run->verify)
            fill_pattern(data, done * ch, (uint64_t)k * ch, sbytes);
        else {
            if (src_off + (uint64_t)k > src_frames)
                src_off = 0;
            memcpy(data, run->src + src_off * fb, (size_t)k * fb);
            src_off += (uint64_t)k;
        }
        int rc = sc_ring_write_advance(ring, (uint64_t)k);
        if (rc < 0) {
            run->status[0] = rc;
            break;
        }
        done += (uint64_t)k;
        idle = 0;
    }
    side_done(run, 0, flt0, maj0, cpu0, waits);
    run->written = done;
    return NULL;
}

static void *consumer(void *arg)
{
    struct run *run = arg;
    sc_ring *ring = run->ring;
    const uint32_t fb = sc_ring_frame_bytes(ring), ch = sc_ring_channels(ring);
    const uint32_t sbytes = fb / ch;
    uint64_t state = (run->seed * 0x9E3779B97F4A7C15u) | 1, done = 0, waits = 0, bad = 0;
    uint64_t dst_off = 0, dst_frames = sc_ring_capacity(ring);
    uint32_t idle = 0;
    uint64_t flt0, maj0;
    prefault_stack();
    thread_faults(&flt0, &maj0);
    uint64_t cpu0 = thread_cpu_ns();
    while (done < run->frames && !atomic_load_explicit(&run->stop, memory_order_relaxed)) {
        uint64_t want = run->verify ? 1 + xorshift64(&state) % run->max_chunk : run->max_chunk;
        void *data;
        int64_t k = sc_ring_read_region(ring, want, &data);
        if (k < 0) {
            run->status[1] = (int32_t)k;
            break;
        }
        if (k == 0) {
            wait_a_little(&waits, &idle);
            if ((waits & 1023) == 0 && now_ns() > run->deadline_ns)
                break;
            continue;
        }
        if (run->verify)
            bad += check_pattern(data, done * ch, (uint64_t)k * ch,
                                 sbytes);
        else {
            if (dst_off + (uint64_t)k > dst_frames)
                dst_off = 0;
            memcpy(run->dst + dst_off * fb, data, (size_t)k * fb);
            dst_off += (uint64_t)k;
        }
        int rc = sc_ring_read_advance(ring, (uint64_t)k);
        if (rc < 0) {
            run->status[1] = rc;
            break;
        }
        done += (uint64_t)k;
        idle = 0;
    }
    side_done(run, 1, flt0, maj0, cpu0, waits);
    run->read = done;
    run->mismatches = bad;
    return NULL;
}

static int run_pair(struct run *run, uint64_t timeout_ns, sc_ring_run_result *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t t0 = now_ns();
    run->deadline_ns = t0 + timeout_ns;
    pthread_t threads[2];
    int rc = pthread_create(&threads[0], NULL, producer, run);
    if (rc != 0)
        return -rc;
    rc = pthread_create(&threads[1], NULL, consumer, run);
    if (rc != 0) {
        atomic_store_explicit(&run->stop, 1, memory_order_relaxed);
        pthread_join(threads[0], NULL);
        return -rc;
    }
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
    out->elapsed_ns = now_ns() - t0;
    out->frames_written = run->written;
    out->frames_read = run->read;
    out->mismatches = run->mismatches;
    out->producer_minflt = run->minflt[0];
    out->consumer_minflt = run->minflt[1];
    out->producer_majflt = run->majflt[0];
    out->consumer_majflt = run->majflt[1];
    out->producer_cpu_ns = run->cpu_ns[0];
    out->consumer_cpu_ns = run->cpu_ns[1];
    out->producer_waits = run->waits[0];
    out->consumer_waits = run->waits[1];
    out->status = run->status[0] < 0 ? run->status[0] : run->status[1];
    out->completed = run->read == run->frames && out->status == 0;
    return 0;
}

int sc_ring_stress(sc_ring *ring, uint64_t frames, uint64_t max_chunk, uint64_t seed,
                   uint64_t timeout_ns, sc_ring_run_result *out)
{
    if (ring == NULL || out == NULL || max_chunk == 0 || max_chunk > sc_ring_capacity(ring))
        return -EINVAL;
    struct run run = {.ring = ring, .frames = frames, .max_chunk = max_chunk,
                      .seed = seed ? seed : 1, .verify = 1};
    return run_pair(&run, timeout_ns, out);
}

int sc_ring_pump(sc_ring *ring, uint64_t frames, uint64_t chunk_frames, uint64_t timeout_ns,
                 sc_ring_run_result *out)
{
    if (ring == NULL || out == NULL || chunk_frames == 0 || chunk_frames > sc_ring_capacity(ring))
        return -EINVAL;
    struct run run = {.ring = ring, .frames = frames, .max_chunk = chunk_frames, .verify = 0};
    const size_t data_bytes = sc_ring_capacity(ring) * sc_ring_frame_bytes(ring);
    uint8_t *src = malloc(data_bytes + ALIAS_SKEW);
    uint8_t *dst = malloc(data_bytes + ALIAS_SKEW);
    if (src == NULL || dst == NULL) {
        free(src);
        free(dst);
        return -ENOMEM;
    }
    run.src = src + ALIAS_SKEW; /* the ring's data is page-aligned: keep away from 4K aliasing */
    run.dst = dst + ALIAS_SKEW;
    /* Touch both buffers now so the timed loops take no first-touch faults. */
    memset(run.src, 0x5a, data_bytes);
    memset(run.dst, 0, data_bytes);
    int rc = run_pair(&run, timeout_ns, out);
    free(src);
    free(dst);
    return rc;
}

int64_t sc_memcpy_reference(uint64_t total_bytes, uint64_t chunk_bytes, uint64_t buffer_bytes)
{
    if (chunk_bytes == 0 || buffer_bytes < chunk_bytes)
        return -EINVAL;
    uint8_t *src_block = malloc(buffer_bytes + 4096);
    uint8_t *dst_block = malloc(buffer_bytes + ALIAS_SKEW);
    if (src_block == NULL || dst_block == NULL) {
        free(src_block);
        free(dst_block);
        return -ENOMEM;
    }
    /* Source and destination a different distance from a page boundary: the well-behaved
     * memcpy (same page offsets hit the 4K-aliasing slow path, 10x slower on x86). */
    uint8_t *src = src_block, *dst = dst_block + ALIAS_SKEW;
    src = (uint8_t *)(((uintptr_t)src + 4095) & ~(uintptr_t)4095);
    memset(src, 0x5a, buffer_bytes);
    memset(dst, 0, buffer_bytes);
    uint64_t off = 0, moved = 0, t0 = now_ns();
    while (moved < total_bytes) {
        if (off + chunk_bytes > buffer_bytes)
            off = 0;
        memcpy(dst + off, src + off, chunk_bytes);
        /* keep the copy: the compiler may not drop stores it cannot prove unused */
        __asm__ volatile("" : : "r"(dst) : "memory");
        off += chunk_bytes;
        moved += chunk_bytes;
    }
    int64_t elapsed = (int64_t)(now_ns() - t0);
    free(src_block);
    free(dst_block);
    return elapsed;
}
