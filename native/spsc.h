/*
 * spsc.h: a single-producer single-consumer queue of fixed-size records, the engine's command,
 * return and event queues.  Header-only and self-contained (the ThreadSanitizer driver in
 * tests/native/ builds it on its own).
 *
 * The queue is only the two indices; the records live in an array of `capacity` slots next to
 * it (capacity a power of two).  Free-running 32-bit indices: wrap-around is harmless.  The
 * producer writes its record, then publishes with a release store of head; the consumer loads
 * head with acquire, copies the record, then frees the slot with a release store of tail, which
 * the producer loads with acquire before it writes that slot again.
 */
#ifndef STREAMCORE_SPSC_H
#define STREAMCORE_SPSC_H

#include <stdatomic.h>
#include <stdint.h>

#ifndef SC_CACHELINE
#define SC_CACHELINE 64
#endif

typedef struct sc_spsc {
    _Alignas(SC_CACHELINE) _Atomic uint32_t head; /* written by the producer */
    _Alignas(SC_CACHELINE) _Atomic uint32_t tail; /* written by the consumer */
} sc_spsc;

/* Records queued now (either side; a snapshot). */
static inline uint32_t sc_spsc_used(sc_spsc *q)
{
    return atomic_load_explicit(&q->head, memory_order_acquire) -
           atomic_load_explicit(&q->tail, memory_order_acquire);
}

/* Producer: the slot index to fill, or -1 when full. */
static inline int64_t sc_spsc_reserve(sc_spsc *q, uint32_t capacity)
{
    uint32_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (head - tail >= capacity)
        return -1;
    return head & (capacity - 1);
}

/* Producer: the reserved slot is written; the consumer may take it. */
static inline void sc_spsc_publish(sc_spsc *q)
{
    uint32_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    atomic_store_explicit(&q->head, head + 1, memory_order_release);
}

/* Consumer: the slot index to read, or -1 when empty. */
static inline int64_t sc_spsc_peek(sc_spsc *q, uint32_t capacity)
{
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (head == tail)
        return -1;
    return tail & (capacity - 1);
}

/* Consumer: the peeked slot is copied; the producer may write it again. */
static inline void sc_spsc_consume(sc_spsc *q)
{
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

#endif
