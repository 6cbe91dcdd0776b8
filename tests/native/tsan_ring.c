/*
 * ThreadSanitizer driver for native/ring.c: a producer and a consumer thread move a counting
 * pattern through a small ring in random chunk sizes, through the public API only
 * (write_region/advance, read_region/advance, readable/writable), and the consumer checks
 * every sample.  Built and run by `make tsan` (tests/test_sanitizers.py runs that).
 *
 *     tsan_ring [seconds [frames [seed]]]   defaults: 2 s or 16 Mi frames, whichever comes
 *                                           first; a seed from the clock (printed)
 *
 * Once `seconds` have passed the run stops, but not before MIN_WRAPS trips around the ring:
 * the bound keeps the run short and never turns a slow machine into a failure.  Exit status:
 * 0 all frames arrived intact, 1 a wrong sample or an API error, 2 bad arguments or setup.
 *
 * Limits of what TSan sees here: the mirror maps the same pages at two addresses, and TSan
 * knows addresses, not pages, so a frame written through the mirror and read through the first
 * copy are two unrelated locations to it (a race there can be missed, never invented).  Most
 * chunks do not cross the wrap, so most frames are written and read at the same address.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streamcore.h"

#define CHANNELS 2
#define MIN_WRAPS 64

struct shared {
    sc_ring *ring;
    uint64_t capacity;
    uint64_t max_frames;
    int64_t deadline_ns;
    uint64_t seed;
    _Atomic int stop;          /* set by either side on a failure */
    _Atomic uint64_t produced; /* final count, valid once producer_done is set (release) */
    _Atomic int producer_done;
    uint64_t consumed, chunks_read; /* the consumer's, read by main after the join */
    int failed;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Sample c of frame f: distinct for every sample of the first 2^31 frames. */
static inline uint32_t pattern(uint64_t frame, uint32_t c)
{
    return (uint32_t)(frame * CHANNELS + c) ^ 0x5bd1e995u;
}

static void fail(struct shared *sh, const char *who, const char *what, int64_t rc)
{
    fprintf(stderr, "tsan_ring: %s: %s (%" PRId64 ": %s)\n", who, what, rc,
            rc < 0 ? strerror((int)-rc) : "-");
    atomic_store(&sh->stop, 1);
}

static void *producer(void *arg)
{
    struct shared *sh = arg;
    uint64_t state = sh->seed | 1, done = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        if (done >= sh->max_frames ||
            (now_ns() > sh->deadline_ns && done >= MIN_WRAPS * sh->capacity))
            break;
        uint64_t want = 1 + xorshift64(&state) % sh->capacity;
        if (want > sh->max_frames - done)
            want = sh->max_frames - done;
        void *data;
        int64_t k = sc_ring_write_region(sh->ring, want, &data);
        if (k < 0) {
            fail(sh, "producer", "sc_ring_write_region", k);
            break;
        }
        int64_t room = sc_ring_writable(sh->ring);
        if (room < k || room > (int64_t)sh->capacity) {
            fail(sh, "producer", "sc_ring_writable out of range", room);
            break;
        }
        if (k == 0) {
            sched_yield();
            continue;
        }
        uint32_t *s = data;
        for (uint64_t f = 0; f < (uint64_t)k; f++)
            for (uint32_t c = 0; c < CHANNELS; c++)
                s[f * CHANNELS + c] = pattern(done + f, c);
        int rc = sc_ring_write_advance(sh->ring, (uint64_t)k);
        if (rc < 0) {
            fail(sh, "producer", "sc_ring_write_advance", rc);
            break;
        }
        done += (uint64_t)k;
    }
    atomic_store_explicit(&sh->produced, done, memory_order_relaxed);
    atomic_store_explicit(&sh->producer_done, 1, memory_order_release);
    return NULL;
}

static void *consumer(void *arg)
{
    struct shared *sh = arg;
    uint64_t state = (sh->seed * 0x9E3779B97F4A7C15u) | 1, done = 0, chunks = 0;
    for (;;) {
        if (atomic_load_explicit(&sh->stop, memory_order_relaxed))
            break;
        /* Read producer_done before the region: once it is set, an empty ring is the end. */
        int finished = atomic_load_explicit(&sh->producer_done, memory_order_acquire);
        uint64_t want = 1 + xorshift64(&state) % sh->capacity;
        void *data;
        int64_t k = sc_ring_read_region(sh->ring, want, &data);
        if (k < 0) {
            fail(sh, "consumer", "sc_ring_read_region", k);
            break;
        }
        int64_t fill = sc_ring_readable(sh->ring);
        if (fill < k || fill > (int64_t)sh->capacity) {
            fail(sh, "consumer", "sc_ring_readable out of range", fill);
            break;
        }
        if (k == 0) {
            if (finished)
                break;
            sched_yield();
            continue;
        }
        const uint32_t *s = data;
        for (uint64_t f = 0; f < (uint64_t)k; f++)
            for (uint32_t c = 0; c < CHANNELS; c++) {
                uint32_t want_sample = pattern(done + f, c);
                if (s[f * CHANNELS + c] != want_sample) {
                    fprintf(stderr,
                            "tsan_ring: frame %" PRIu64 " channel %u: got 0x%08x, expected "
                            "0x%08x\n", done + f, c, s[f * CHANNELS + c], want_sample);
                    sh->failed = 1;
                    atomic_store(&sh->stop, 1);
                    goto out;
                }
            }
        int rc = sc_ring_read_advance(sh->ring, (uint64_t)k);
        if (rc < 0) {
            fail(sh, "consumer", "sc_ring_read_advance", rc);
            break;
        }
        done += (uint64_t)k;
        chunks++;
    }
out:
    sh->consumed = done;
    sh->chunks_read = chunks;
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    uint64_t frames = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)16 << 20;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)now_ns();
    if (argc > 4 || !(seconds > 0) || frames == 0) {
        fprintf(stderr, "usage: %s [seconds [frames [seed]]]\n", argv[0]);
        return 2;
    }
    struct shared sh = {.max_frames = frames, .seed = seed};
    /* The smallest ring: 2 channels of s32 round up to one page of frames (512). */
    int rc = sc_ring_create(&sh.ring, 1, CHANNELS, SC_FORMAT_S32, "tsan");
    if (rc < 0) {
        fprintf(stderr, "tsan_ring: sc_ring_create: %s\n", strerror(-rc));
        return 2;
    }
    sh.capacity = sc_ring_capacity(sh.ring);
    sh.deadline_ns = now_ns() + (int64_t)(seconds * 1e9);
    pthread_t threads[2];
    if (pthread_create(&threads[0], NULL, producer, &sh) != 0 ||
        pthread_create(&threads[1], NULL, consumer, &sh) != 0) {
        fprintf(stderr, "tsan_ring: pthread_create failed\n");
        return 2; /* a thread may be running: do not tear the ring down under it */
    }
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
    uint64_t produced = atomic_load(&sh.produced);
    sc_ring_destroy(sh.ring);
#ifdef __SANITIZE_THREAD__
    const char *tsan = "on";
#else
    const char *tsan = "off";
#endif
    printf("tsan_ring: %" PRIu64 " of %" PRIu64 " frames in %" PRIu64 " chunks through %" PRIu64
           " frames of ring (%" PRIu64 " wraps), seed %" PRIu64 ", thread sanitizer %s\n",
           sh.consumed, produced, sh.chunks_read, sh.capacity, sh.consumed / sh.capacity,
           sh.seed, tsan);
    if (sh.failed || atomic_load(&sh.stop) || sh.consumed != produced) {
        fprintf(stderr, "tsan_ring: FAILED\n");
        return 1;
    }
    printf("tsan_ring: ok\n");
    return 0;
}
