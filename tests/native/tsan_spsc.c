/*
 * ThreadSanitizer driver for native/spsc.h: a producer thread sends counting records through an
 * sc_spsc queue and its record array (the engine's use: reserve a slot, fill it, publish; peek,
 * copy the record out, consume), a consumer thread checks each one.  Built and run by
 * `make tsan` (tests/test_sanitizers.py runs that).
 *
 *     tsan_spsc [seconds [records]]     defaults: 2 s or 4 Mi records, whichever comes first
 *
 * The indices start just below 2^32, so every run also crosses their wrap-around.  Once
 * `seconds` have passed the run stops, but not before MIN_RECORDS records (past the wrap).
 * Exit status: 0 every record arrived once, in order and intact; 1 otherwise; 2 bad arguments.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "spsc.h"

#define SLOTS 8 /* small: the queue is full and empty often */
#define WORDS 6
#define START (UINT32_MAX - 1000u) /* both indices: the wrap comes after 1000 records */
#define MIN_RECORDS 4096

struct record {
    uint64_t seq;
    uint32_t words[WORDS]; /* derived from seq: a torn or stale record shows */
};

static sc_spsc queue;
static struct record slots[SLOTS];
static uint64_t max_records;
static int64_t deadline_ns;
static _Atomic int stop;
static _Atomic uint64_t sent; /* final count, valid once sender_done is set (release) */
static _Atomic int sender_done;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint32_t word(uint64_t seq, uint32_t i)
{
    return (uint32_t)(seq * 0x9E3779B97F4A7C15u >> 32) + i * 0x01000193u;
}

static void *producer(void *arg)
{
    (void)arg;
    uint64_t seq = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed) && seq < max_records &&
           (seq < MIN_RECORDS || (seq & 255) != 0 || now_ns() < deadline_ns)) {
        int64_t i = sc_spsc_reserve(&queue, SLOTS);
        if (i < 0) {
            sched_yield();
            continue;
        }
        slots[i].seq = seq;
        for (uint32_t w = 0; w < WORDS; w++)
            slots[i].words[w] = word(seq, w);
        sc_spsc_publish(&queue);
        seq++;
    }
    atomic_store_explicit(&sent, seq, memory_order_relaxed);
    atomic_store_explicit(&sender_done, 1, memory_order_release);
    return NULL;
}

static uint64_t received;
static int failed;

static void *consumer(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int finished = atomic_load_explicit(&sender_done, memory_order_acquire);
        uint32_t used = sc_spsc_used(&queue);
        if (used > SLOTS) {
            fprintf(stderr, "tsan_spsc: %u records queued in %u slots\n", used, SLOTS);
            failed = 1;
            break;
        }
        int64_t i = sc_spsc_peek(&queue, SLOTS);
        if (i < 0) {
            if (finished)
                break;
            sched_yield();
            continue;
        }
        struct record r = slots[i];
        sc_spsc_consume(&queue);
        int bad = r.seq != received;
        for (uint32_t w = 0; w < WORDS; w++)
            bad |= r.words[w] != word(received, w);
        if (bad) {
            fprintf(stderr, "tsan_spsc: record %" PRIu64 ": got seq %" PRIu64 " words %08x..\n",
                    received, r.seq, r.words[0]);
            failed = 1;
            break;
        }
        received++;
    }
    if (failed)
        atomic_store(&stop, 1);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    max_records = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)4 << 20;
    if (argc > 3 || !(seconds > 0) || max_records == 0) {
        fprintf(stderr, "usage: %s [seconds [records]]\n", argv[0]);
        return 2;
    }
    atomic_init(&queue.head, START);
    atomic_init(&queue.tail, START);
    deadline_ns = now_ns() + (int64_t)(seconds * 1e9);
    pthread_t threads[2];
    if (pthread_create(&threads[0], NULL, producer, NULL) != 0 ||
        pthread_create(&threads[1], NULL, consumer, NULL) != 0) {
        fprintf(stderr, "tsan_spsc: pthread_create failed\n");
        return 2;
    }
    pthread_join(threads[0], NULL);
    pthread_join(threads[1], NULL);
    uint64_t total = atomic_load(&sent);
#ifdef __SANITIZE_THREAD__
    const char *tsan = "on";
#else
    const char *tsan = "off";
#endif
    printf("tsan_spsc: %" PRIu64 " of %" PRIu64 " records through %d slots, indices from %u to "
           "%u, thread sanitizer %s\n", received, total, SLOTS, START,
           atomic_load(&queue.head), tsan);
    if (failed || received != total || total < (max_records < MIN_RECORDS ? max_records
                                                                          : MIN_RECORDS)) {
        fprintf(stderr, "tsan_spsc: FAILED\n");
        return 1;
    }
    printf("tsan_spsc: ok\n");
    return 0;
}
