/*
 * The mlocked mirrored single-producer / single-consumer ring.
 *
 * Memory: one memfd = [control page][data: capacity * frame_bytes].  The process reserves
 * header + 2 * data bytes of address space, maps the memfd's first header + data bytes at the
 * start, then maps the data again (MAP_FIXED) right after the first copy, so every span of up
 * to `capacity` frames that starts in the first copy is contiguous: no split at the wrap.
 *
 * Indices: free-running uint64 frame counts in the control page, the write index and the read
 * index on cache lines of their own (128 bytes apart, so the adjacent-line prefetcher does not
 * pair them either).  Each side keeps its own index in its handle and only stores it to shared
 * memory; it caches the peer's index and loads it again only when the cached value leaves too
 * little room (one cross-core miss saved per call).  Every value loaded from the peer is
 * validated before any pointer is computed from it, and geometry (capacity, frame size) comes
 * from the handle, never again from shared memory after sc_ring_create / sc_ring_attach
 * checked it.  A peer value that cannot be right (the write index behind the read index or
 * more than `capacity` ahead of it, a peer index going backwards, or our own index changed
 * under us) marks the ring broken: -EPIPE from then on, on both sides.
 *
 * Memory orders, the pairing in one place:
 *   writer: fill frames, then store_release(write_index)  -> reader: load_acquire(write_index),
 *           then read the frames (they are visible).
 *   reader: read frames, then store_release(read_index)   -> writer: load_acquire(read_index),
 *           then overwrite those frames (the reader is done with them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <linux/futex.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older headers lack the name */
#endif

#define SC_LINE 128 /* index separation: a cache line pair, against adjacent-line prefetch */

/* The control page as both sides see it.  Offsets are fixed by SC_RING_OFF_* in the header. */
struct sc_ring_shared {
    /* Written once by sc_ring_create, then only read (and distrusted: copied and checked). */
    uint64_t magic;
    uint32_t version;
    uint32_t format;
    uint32_t channels;
    uint32_t frame_bytes;
    uint64_t capacity;
    uint64_t data_offset;
    uint64_t data_bytes;
    _Atomic uint32_t broken; /* either side sets it on corruption; read on every call */

    /* The writer's line: only the producer stores here. */
    _Alignas(SC_LINE) _Atomic uint64_t write_index;
    _Atomic uint64_t overruns;

    /* The reader's line: only the consumer stores here. */
    _Alignas(SC_LINE) _Atomic uint64_t read_index;
    _Atomic uint64_t underruns;

    /* Waits (sc_ring_wait_*): futex words bumped by the side that made progress, and how
     * many wait on each.  Touched only while someone waits, on a line of their own. */
    _Alignas(SC_LINE) _Atomic uint32_t data_seq;   /* the writer published frames */
    _Atomic uint32_t data_waiters;                 /* readers waiting for frames */
    _Atomic uint32_t space_seq;                    /* the reader released frames */
    _Atomic uint32_t space_waiters;                /* writers waiting for room */
    _Atomic uint32_t wakes;                        /* sc_ring_wake calls: ends every wait */

    /* The two sides (sc_ring_claim / sc_ring_leave): each side stores its own process, the
     * other reads it to ask whether its peer lives.  Never touched on the realtime path. */
    _Alignas(SC_LINE) _Atomic int32_t writer_pid;  /* 0: never claimed */
    _Atomic uint32_t writer_state;                 /* SC_RING_PEER_* */
    _Atomic uint64_t writer_pidns;                 /* inode of its /proc/self/ns/pid; 0 unknown */
    _Atomic int32_t reader_pid;
    _Atomic uint32_t reader_state;
    _Atomic uint64_t reader_pidns;
};

_Static_assert(offsetof(struct sc_ring_shared, magic) == SC_RING_OFF_MAGIC, "layout");
_Static_assert(offsetof(struct sc_ring_shared, version) == SC_RING_OFF_VERSION, "layout");
_Static_assert(offsetof(struct sc_ring_shared, format) == SC_RING_OFF_FORMAT, "layout");
_Static_assert(offsetof(struct sc_ring_shared, channels) == SC_RING_OFF_CHANNELS, "layout");
_Static_assert(offsetof(struct sc_ring_shared, frame_bytes) == SC_RING_OFF_FRAME_BYTES, "layout");
_Static_assert(offsetof(struct sc_ring_shared, capacity) == SC_RING_OFF_CAPACITY, "layout");
_Static_assert(offsetof(struct sc_ring_shared, broken) == SC_RING_OFF_BROKEN, "layout");
_Static_assert(offsetof(struct sc_ring_shared, write_index) == SC_RING_OFF_WRITE_INDEX, "layout");
_Static_assert(offsetof(struct sc_ring_shared, read_index) == SC_RING_OFF_READ_INDEX, "layout");
_Static_assert(sizeof(struct sc_ring_shared) <= 4096, "the control block fits one page");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared-memory atomics must be lock-free");

/* The process-local handle.  Geometry is a validated private copy; the two cached indices sit
 * on lines of their own because the producer and the consumer thread each write one. */
struct sc_ring {
    struct sc_ring_shared *shared; /* the control page */
    uint8_t *data;                 /* first copy; the mirror starts at data + data_bytes */
    void *map;                     /* the whole reservation: header + 2 * data */
    size_t map_bytes;
    size_t header_bytes;
    uint64_t data_bytes;
    uint64_t capacity; /* frames, a power of two */
    uint64_t mask;     /* capacity - 1 */
    uint32_t channels, format, frame_bytes;
    int fd;
    int32_t locked, lock_errno;
    uint64_t locked_bytes;

    /* The producer's line: its own index (the truth; the shared copy is what it published)
     * and the last read index it loaded and validated, good until it needs more room. */
    _Alignas(SC_LINE) uint64_t write_local;
    uint64_t read_seen;
    /* The consumer's line, the same mirrored. */
    _Alignas(SC_LINE) uint64_t read_local;
    uint64_t write_seen;
    _Alignas(SC_LINE) _Atomic uint64_t corruptions;
    _Atomic int32_t broken;
    _Atomic uint32_t claimed; /* SC_RING_WRITER | SC_RING_READER: sides this handle claimed */
    /* Set by sc_ring_dontfork: the process whose mapping this is (a forked child has none). */
    _Atomic int32_t mapped_in;
};

static uint32_t sample_bytes(uint32_t format)
{
    switch (format) {
    case SC_FORMAT_F32: return 4;
    case SC_FORMAT_S16: return 2;
    case SC_FORMAT_S32: return 4;
    default: return 0;
    }
}

static uint64_t next_pow2(uint64_t x)
{
    if (x <= 1)
        return 1;
    return (uint64_t)1 << (64 - __builtin_clzll(x - 1));
}

/* Smallest power-of-two capacity >= frames with capacity * frame_bytes a page multiple: the
 * page size is a power of two, so that needs capacity to be a multiple of
 * page / gcd(frame_bytes, page), itself a power of two. */
static uint64_t round_capacity(uint64_t frames, uint32_t frame_bytes, uint64_t page)
{
    uint64_t low_bit = (uint64_t)frame_bytes & -(uint64_t)frame_bytes; /* gcd with a power of 2 */
    uint64_t gcd = low_bit < page ? low_bit : page;
    uint64_t min_frames = page / gcd;
    uint64_t cap = next_pow2(frames);
    return cap < min_frames ? min_frames : cap;
}

/* Reserve header + 2 * data of address space, then put the memfd over it twice. */
static int map_mirrored(int fd, size_t header_bytes, size_t data_bytes, void **out)
{
    size_t total = header_bytes + 2 * data_bytes;
    uint8_t *base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
    if (base == MAP_FAILED)
        return -errno;
    /* Control page + first copy of the data: file offsets 0 .. header + data. */
    void *first = mmap(base, header_bytes + data_bytes, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, fd, 0);
    if (first == MAP_FAILED)
        goto fail;
    /* The mirror: the same data pages again, right after the first copy. */
    void *mirror = mmap(base + header_bytes + data_bytes, data_bytes, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, fd, (off_t)header_bytes);
    if (mirror == MAP_FAILED)
        goto fail;
    *out = base;
    return 0;
fail:;
    int err = errno;
    munmap(base, total);
    return -err;
}

static int new_handle(sc_ring **out)
{
    sc_ring *ring = aligned_alloc(SC_LINE, (sizeof(sc_ring) + SC_LINE - 1) / SC_LINE * SC_LINE);
    if (ring == NULL)
        return -ENOMEM;
    memset(ring, 0, sizeof(*ring));
    ring->fd = -1;
    *out = ring;
    return 0;
}

/* Fill the handle's geometry from validated values and point it into the mapping. */
static void set_geometry(sc_ring *ring, void *map, size_t header_bytes, uint64_t capacity,
                         uint32_t channels, uint32_t format, uint32_t frame_bytes)
{
    ring->map = map;
    ring->header_bytes = header_bytes;
    ring->capacity = capacity;
    ring->mask = capacity - 1;
    ring->channels = channels;
    ring->format = format;
    ring->frame_bytes = frame_bytes;
    ring->data_bytes = capacity * frame_bytes;
    ring->map_bytes = header_bytes + 2 * ring->data_bytes;
    ring->shared = map;
    ring->data = (uint8_t *)map + header_bytes;
}

int sc_ring_create(sc_ring **out, uint64_t frames, uint32_t channels, uint32_t format,
                   const char *name)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    uint32_t sbytes = sample_bytes(format);
    if (frames == 0 || channels == 0 || sbytes == 0 || channels > SC_RING_MAX_BYTES / sbytes)
        return -EINVAL;
    uint32_t frame_bytes = channels * sbytes;
    if (frames > SC_RING_MAX_BYTES / frame_bytes)
        return -EINVAL;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return -EINVAL;
    uint64_t capacity = round_capacity(frames, frame_bytes, (uint64_t)page);
    uint64_t data_bytes = capacity * frame_bytes;
    if (data_bytes > SC_RING_MAX_BYTES)
        return -EINVAL;
    size_t header_bytes = (size_t)page;

    char label[96];
    snprintf(label, sizeof(label), "streamcore-ring%s%.64s", name ? ":" : "", name ? name : "");
    int fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    int rc;
    sc_ring *ring = NULL;
    void *map = NULL;
    if (ftruncate(fd, (off_t)(header_bytes + data_bytes)) != 0) {
        rc = -errno;
        goto fail;
    }
    /* Sealed size: no process holding the fd can shrink it under a mapping (SIGBUS) or grow it. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        rc = -errno;
        goto fail;
    }
    rc = map_mirrored(fd, header_bytes, data_bytes, &map);
    if (rc < 0)
        goto fail;
    rc = new_handle(&ring);
    if (rc < 0)
        goto fail;
    set_geometry(ring, map, header_bytes, capacity, channels, format, frame_bytes);
    ring->fd = fd;

    struct sc_ring_shared *sh = ring->shared; /* fresh zero pages: nobody else sees them yet */
    sh->version = SC_RING_VERSION;
    sh->format = format;
    sh->channels = channels;
    sh->frame_bytes = frame_bytes;
    sh->capacity = capacity;
    sh->data_offset = header_bytes;
    sh->data_bytes = data_bytes;
    atomic_init(&sh->broken, 0);
    atomic_init(&sh->write_index, 0);
    atomic_init(&sh->read_index, 0);
    atomic_init(&sh->overruns, 0);
    atomic_init(&sh->underruns, 0);
    /* Magic last, with release: a peer that sees it (acquire) sees the whole header. */
    __atomic_store_n(&sh->magic, (uint64_t)SC_RING_MAGIC, __ATOMIC_RELEASE);
    *out = ring;
    return 0;
fail:
    if (map != NULL)
        munmap(map, header_bytes + 2 * data_bytes);
    free(ring);
    close(fd);
    return rc;
}

int sc_ring_attach(sc_ring **out, int fd)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return -EINVAL;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return -errno;
    int rc;
    void *head = MAP_FAILED;
    void *map = NULL;
    sc_ring *ring = NULL;
    size_t header_bytes = (size_t)page;
    uint64_t data_bytes = 0;

    /* Only a memfd whose size can no longer shrink is safe to map: check the seal first. */
    int seals = fcntl(own, F_GET_SEALS);
    struct stat st;
    if (seals < 0 || !(seals & F_SEAL_SHRINK) || fstat(own, &st) != 0 ||
        (uint64_t)st.st_size < header_bytes) {
        rc = -EINVAL;
        goto fail;
    }
    /* Read the header through a private, read-only look, then copy it out once. */
    head = mmap(NULL, header_bytes, PROT_READ, MAP_SHARED, own, 0);
    if (head == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    const struct sc_ring_shared *h = head;
    /* acquire pairs with the creator's release of the magic: the fields below are complete */
    uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    uint32_t version = h->version, format = h->format, channels = h->channels;
    uint32_t frame_bytes = h->frame_bytes;
    uint64_t capacity = h->capacity, data_offset = h->data_offset;
    data_bytes = h->data_bytes;
    uint32_t broken = atomic_load_explicit(&h->broken, memory_order_relaxed);
    /* r, w, r again, each acquire to keep the order: valid for honest peers that are running
     * right now too (see fill_level) */
    uint64_t r1 = atomic_load_explicit(&h->read_index, memory_order_acquire);
    uint64_t w = atomic_load_explicit(&h->write_index, memory_order_acquire);
    uint64_t r = atomic_load_explicit(&h->read_index, memory_order_acquire);
    munmap(head, header_bytes);
    head = MAP_FAILED;

    if (magic != (uint64_t)SC_RING_MAGIC) {
        rc = -EPROTO;
        goto fail;
    }
    if (version != SC_RING_VERSION) {
        rc = -EPROTONOSUPPORT;
        goto fail;
    }
    uint32_t sbytes = sample_bytes(format);
    if (sbytes == 0 || channels == 0 || channels > SC_RING_MAX_BYTES / sbytes ||
        frame_bytes != channels * sbytes || capacity == 0 || (capacity & (capacity - 1)) != 0 ||
        capacity > SC_RING_MAX_BYTES / frame_bytes || data_bytes != capacity * frame_bytes ||
        data_bytes % (uint64_t)page != 0 || data_offset != header_bytes ||
        (uint64_t)st.st_size != header_bytes + data_bytes) {
        rc = -EBADMSG;
        goto fail;
    }
    if (broken || r < r1 || w < r1 || w - r1 > capacity + (r - r1)) {
        rc = -EPIPE;
        goto fail;
    }
    rc = map_mirrored(own, header_bytes, data_bytes, &map);
    if (rc < 0)
        goto fail;
    rc = new_handle(&ring);
    if (rc < 0)
        goto fail;
    set_geometry(ring, map, header_bytes, capacity, channels, format, frame_bytes);
    ring->fd = own;
    /* Whichever side this handle becomes, its caches must not exceed the peer's true index:
     * the reader may already be past the w loaded above, never past the true one. */
    ring->write_local = w;
    ring->write_seen = w > r ? w : r;
    ring->read_local = r;
    ring->read_seen = r < w ? r : w;
    *out = ring;
    return 0;
fail:
    if (head != MAP_FAILED)
        munmap(head, header_bytes);
    if (map != NULL)
        munmap(map, header_bytes + 2 * data_bytes);
    free(ring);
    close(own);
    return rc;
}

void sc_ring_destroy(sc_ring *ring)
{
    if (ring == NULL)
        return;
    if (ring->map != NULL)
        sc_ring_leave(ring, SC_RING_WRITER | SC_RING_READER); /* the sides it still holds */
    if (ring->map != NULL)
        munmap(ring->map, ring->map_bytes); /* also drops the mlock of those pages */
    if (ring->fd >= 0)
        close(ring->fd);
    free(ring);
}

int sc_ring_lock(sc_ring *ring)
{
    if (ring == NULL)
        return -EINVAL;
    if (ring->locked)
        return 0;
    /* The control page and the first copy of the data are every physical page the ring has;
     * locking the mirror too would count the same pages twice against RLIMIT_MEMLOCK. */
    size_t bytes = ring->header_bytes + ring->data_bytes;
    if (mlock(ring->map, bytes) != 0) {
        int err = errno;
        munlock(ring->map, bytes); /* mlock may have locked part of the range before failing */
        ring->lock_errno = err;
        return -err;
    }
    /* mlock faulted the pages in through the first mapping only; the mirror still lacks page
     * table entries.  Populate both mappings writable (no data is written) so neither side's
     * first access to a frame takes a fault; fall back to reading each page. */
    if (madvise(ring->map, ring->map_bytes, MADV_POPULATE_WRITE) != 0) {
        long page = sysconf(_SC_PAGESIZE);
        for (size_t off = 0; off < ring->map_bytes; off += (size_t)page)
            (void)*(volatile uint8_t *)((uint8_t *)ring->map + off);
    }
    ring->locked = 1;
    ring->lock_errno = 0;
    ring->locked_bytes = bytes;
    return 0;
}

int sc_ring_dontfork(sc_ring *ring)
{
    if (ring == NULL)
        return -EINVAL;
    if (madvise(ring->map, ring->map_bytes, MADV_DONTFORK) != 0)
        return -errno;
    atomic_store_explicit(&ring->mapped_in, (int32_t)getpid(), memory_order_relaxed);
    return 0;
}

int sc_ring_fd(const sc_ring *ring) { return ring->fd; }
uint64_t sc_ring_capacity(const sc_ring *ring) { return ring->capacity; }
uint32_t sc_ring_channels(const sc_ring *ring) { return ring->channels; }
uint32_t sc_ring_format(const sc_ring *ring) { return ring->format; }
uint32_t sc_ring_frame_bytes(const sc_ring *ring) { return ring->frame_bytes; }
void *sc_ring_data(const sc_ring *ring) { return ring->data; }

/* ---- the realtime path: no syscalls, no locks, no allocation ----------------------------- */

static void mark_broken(sc_ring *ring)
{
    /* relaxed: the flag carries no data with it; each side re-reads it on every call */
    atomic_store_explicit(&ring->broken, 1, memory_order_relaxed);
    atomic_store_explicit(&ring->shared->broken, 1, memory_order_relaxed);
}

static inline int corrupted(sc_ring *ring)
{
    atomic_fetch_add_explicit(&ring->corruptions, 1, memory_order_relaxed);
    mark_broken(ring);
    return -EPIPE;
}

static inline bool is_broken(const sc_ring *ring)
{
    /* relaxed loads: a late view of the peer's flag costs one more call, never bad memory */
    return atomic_load_explicit(&ring->broken, memory_order_relaxed) ||
           atomic_load_explicit(&ring->shared->broken, memory_order_relaxed);
}

/* The writer's view: free frames (at least `need` if the reader allows it), or -EPIPE.
 * The reader's index is loaded again only when the last one seen leaves less than `need`
 * free: frames below a read index once loaded with acquire stay free, so the cached value is
 * safe, and skipping the load saves a cache miss on the reader's line per call.  Every value
 * loaded is validated to lie within [w - capacity, w]; our own published index is checked to
 * be still ours. */
static inline int64_t writer_free(sc_ring *ring, uint64_t need, uint64_t *w_out)
{
    struct sc_ring_shared *sh = ring->shared;
    if (is_broken(ring))
        return -EPIPE;
    uint64_t w = ring->write_local;
    /* relaxed: only we store write_index, so this load is a tamper check, not a sync */
    if (atomic_load_explicit(&sh->write_index, memory_order_relaxed) != w)
        return corrupted(ring);
    uint64_t free_frames = ring->capacity - (w - ring->read_seen);
    if (free_frames < need) {
        /* acquire: pairs with the reader's release store; its reads of the frames we are
         * about to overwrite are complete */
        uint64_t r = atomic_load_explicit(&sh->read_index, memory_order_acquire);
        uint64_t used = w - r; /* unsigned: r > w wraps to a huge value, caught below */
        if (used > ring->capacity || r < ring->read_seen)
            return corrupted(ring);
        ring->read_seen = r;
        free_frames = ring->capacity - used;
    }
    *w_out = w;
    return (int64_t)free_frames;
}

/* The reader's view: readable frames, or -EPIPE; the same scheme mirrored. */
static inline int64_t reader_avail(sc_ring *ring, uint64_t need, uint64_t *r_out)
{
    struct sc_ring_shared *sh = ring->shared;
    if (is_broken(ring))
        return -EPIPE;
    uint64_t r = ring->read_local;
    /* relaxed: only we store read_index; a different value means someone else wrote it */
    if (atomic_load_explicit(&sh->read_index, memory_order_relaxed) != r)
        return corrupted(ring);
    uint64_t avail = ring->write_seen - r;
    if (avail < need) {
        /* acquire: pairs with the writer's release store; the frames up to w are visible */
        uint64_t w = atomic_load_explicit(&sh->write_index, memory_order_acquire);
        avail = w - r;
        if (avail > ring->capacity || w < ring->write_seen)
            return corrupted(ring);
        ring->write_seen = w;
    }
    *r_out = r;
    return (int64_t)avail;
}

int64_t sc_ring_write_region(sc_ring *ring, uint64_t max_frames, void **data)
{
    uint64_t w;
    int64_t free_frames = writer_free(ring, max_frames, &w);
    if (free_frames < 0)
        return free_frames;
    uint64_t k = max_frames < (uint64_t)free_frames ? max_frames : (uint64_t)free_frames;
    if (k < max_frames) {
        /* relaxed load + store: only the writer updates this counter */
        uint64_t n = atomic_load_explicit(&ring->shared->overruns, memory_order_relaxed);
        atomic_store_explicit(&ring->shared->overruns, n + 1, memory_order_relaxed);
    }
    /* w & mask < capacity and k <= capacity: the span ends inside the mirror */
    *data = ring->data + (w & ring->mask) * ring->frame_bytes;
    return (int64_t)k;
}

/* After publishing an index: wake the peers waiting for it, if any (one fence and one load
 * otherwise: no syscall on the realtime path unless someone waits).  The waiter registers,
 * then loads the index (wait_for); we store the index, then load the waiter count: with a
 * seq_cst fence on both sides one of the two sees the other. */
static void wake_waiters(_Atomic uint32_t *seq, _Atomic uint32_t *waiters)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(waiters, memory_order_relaxed) == 0)
        return;
    atomic_fetch_add_explicit(seq, 1, memory_order_release);
    /* Shared futex (no _PRIVATE): the waiter may be another process mapping the memfd. */
    syscall(SYS_futex, seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Block until `enough` says so, the ring breaks or the deadline passes. */
static int64_t wait_for(sc_ring *ring, _Atomic uint32_t *seq, _Atomic uint32_t *waiters,
                        int64_t (*level)(const sc_ring *), uint64_t frames, int64_t deadline_ns,
                        uint32_t woken)
{
    if (frames > ring->capacity)
        return -EINVAL;
    atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
    int64_t have;
    for (;;) {
        uint32_t seen = atomic_load_explicit(seq, memory_order_acquire);
        atomic_thread_fence(memory_order_seq_cst);
        have = level(ring);
        if (have < 0 || (uint64_t)have >= frames)
            break;
        if (atomic_load_explicit(&ring->shared->wakes, memory_order_acquire) != woken) {
            have = -EAGAIN; /* sc_ring_wake: the caller looks at why */
            break;
        }
        struct timespec ts, *until = NULL;
        if (deadline_ns >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec >= deadline_ns) {
                have = -ETIMEDOUT;
                break;
            }
            ts.tv_sec = deadline_ns / 1000000000;
            ts.tv_nsec = deadline_ns % 1000000000;
            until = &ts;
        }
        /* Absolute CLOCK_MONOTONIC deadline; returns at once if seq moved since `seen`. */
        syscall(SYS_futex, seq, FUTEX_WAIT_BITSET, seen, until, NULL, FUTEX_BITSET_MATCH_ANY);
    }
    atomic_fetch_sub_explicit(waiters, 1, memory_order_seq_cst);
    return have;
}

uint32_t sc_ring_wakes(const sc_ring *ring)
{
    return atomic_load_explicit(&ring->shared->wakes, memory_order_acquire);
}

int64_t sc_ring_wait_writable(sc_ring *ring, uint64_t frames, int64_t deadline_ns,
                              uint32_t wakes)
{
    return wait_for(ring, &ring->shared->space_seq, &ring->shared->space_waiters,
                    sc_ring_writable, frames, deadline_ns, wakes);
}

int64_t sc_ring_wait_readable(sc_ring *ring, uint64_t frames, int64_t deadline_ns,
                              uint32_t wakes)
{
    return wait_for(ring, &ring->shared->data_seq, &ring->shared->data_waiters,
                    sc_ring_readable, frames, deadline_ns, wakes);
}

void sc_ring_wake(sc_ring *ring)
{
    struct sc_ring_shared *sh = ring->shared;
    atomic_fetch_add_explicit(&sh->wakes, 1, memory_order_release);
    wake_waiters(&sh->data_seq, &sh->data_waiters);
    wake_waiters(&sh->space_seq, &sh->space_waiters);
}

int sc_ring_write_advance(sc_ring *ring, uint64_t frames)
{
    uint64_t w;
    int64_t free_frames = writer_free(ring, frames, &w);
    if (free_frames < 0)
        return (int)free_frames;
    if (frames > (uint64_t)free_frames)
        return -EINVAL;
    ring->write_local = w + frames;
    /* release: the frames written before this store are visible to a reader that loads the
     * new index with acquire */
    atomic_store_explicit(&ring->shared->write_index, w + frames, memory_order_release);
    wake_waiters(&ring->shared->data_seq, &ring->shared->data_waiters);
    return 0;
}

int64_t sc_ring_read_region(sc_ring *ring, uint64_t max_frames, void **data)
{
    uint64_t r;
    int64_t avail = reader_avail(ring, max_frames, &r);
    if (avail < 0)
        return avail;
    uint64_t k = max_frames < (uint64_t)avail ? max_frames : (uint64_t)avail;
    if (k < max_frames) {
        /* relaxed load + store: only the reader updates this counter */
        uint64_t n = atomic_load_explicit(&ring->shared->underruns, memory_order_relaxed);
        atomic_store_explicit(&ring->shared->underruns, n + 1, memory_order_relaxed);
    }
    *data = ring->data + (r & ring->mask) * ring->frame_bytes;
    return (int64_t)k;
}

int sc_ring_read_advance(sc_ring *ring, uint64_t frames)
{
    uint64_t r;
    int64_t avail = reader_avail(ring, frames, &r);
    if (avail < 0)
        return (int)avail;
    if (frames > (uint64_t)avail)
        return -EINVAL;
    ring->read_local = r + frames;
    /* release: our reads of those frames happen before the writer may reuse them */
    atomic_store_explicit(&ring->shared->read_index, r + frames, memory_order_release);
    wake_waiters(&ring->shared->space_seq, &ring->shared->space_waiters);
    return 0;
}

int64_t sc_ring_write_frames(sc_ring *ring, const void *src, uint64_t frames)
{
    void *data;
    int64_t k = sc_ring_write_region(ring, frames, &data);
    if (k <= 0)
        return k;
    memcpy(data, src, (size_t)k * ring->frame_bytes);
    int rc = sc_ring_write_advance(ring, (uint64_t)k);
    return rc < 0 ? rc : k;
}

int64_t sc_ring_read_frames(sc_ring *ring, void *dst, uint64_t frames)
{
    void *data;
    int64_t k = sc_ring_read_region(ring, frames, &data);
    if (k <= 0)
        return k;
    memcpy(dst, data, (size_t)k * ring->frame_bytes);
    int rc = sc_ring_read_advance(ring, (uint64_t)k);
    return rc < 0 ? rc : k;
}

int64_t sc_ring_write_gapless(sc_ring *ring, const void *src, uint64_t frames, uint64_t *gap)
{
    while (*gap > 0) {
        void *data;
        int64_t k = sc_ring_write_region(ring, *gap, &data);
        if (k < 0)
            return k;
        if (k == 0) { /* still no room for the lost frames: these are lost too */
            *gap += frames;
            return 0;
        }
        memset(data, 0, (size_t)k * ring->frame_bytes);
        int rc = sc_ring_write_advance(ring, (uint64_t)k);
        if (rc < 0)
            return rc;
        *gap -= (uint64_t)k;
    }
    int64_t k = sc_ring_write_frames(ring, src, frames);
    if (k < 0)
        return k;
    *gap += frames - (uint64_t)k;
    return k;
}

/* Fill level from either side (or a third thread).  Loads r, then w, then r again: for honest
 * peers r1 <= r2, r1 <= w (w was at least r1 when r1 was loaded, and only grows) and
 * w <= r2 + capacity (when w was loaded the read index was at most r2), whatever the timing,
 * so a violation is corruption.  The fill reported is w - r2, the most recent. */
static int64_t fill_level(const sc_ring *ring)
{
    sc_ring *mut = (sc_ring *)ring; /* corruption bookkeeping only */
    const struct sc_ring_shared *sh = ring->shared;
    if (is_broken(ring))
        return -EPIPE;
    /* acquire on each: keeps the three loads in this order */
    uint64_t r1 = atomic_load_explicit(&sh->read_index, memory_order_acquire);
    uint64_t w = atomic_load_explicit(&sh->write_index, memory_order_acquire);
    uint64_t r2 = atomic_load_explicit(&sh->read_index, memory_order_acquire);
    if (r2 < r1 || w < r1 || w - r1 > ring->capacity + (r2 - r1))
        return corrupted(mut);
    return w >= r2 ? (int64_t)(w - r2) : 0;
}

int64_t sc_ring_readable(const sc_ring *ring) { return fill_level(ring); }

int64_t sc_ring_writable(const sc_ring *ring)
{
    int64_t fill = fill_level(ring);
    return fill < 0 ? fill : (int64_t)ring->capacity - fill;
}

void sc_ring_get_stats(const sc_ring *ring, sc_ring_stats *out)
{
    const struct sc_ring_shared *sh = ring->shared;
    /* relaxed: a snapshot for reporting; nothing is derived from it */
    out->frames_written = atomic_load_explicit(&sh->write_index, memory_order_relaxed);
    out->frames_read = atomic_load_explicit(&sh->read_index, memory_order_relaxed);
    out->overruns = atomic_load_explicit(&sh->overruns, memory_order_relaxed);
    out->underruns = atomic_load_explicit(&sh->underruns, memory_order_relaxed);
    out->corruptions = atomic_load_explicit(&ring->corruptions, memory_order_relaxed);
    out->locked_bytes = ring->locked_bytes;
    out->locked = ring->locked;
    out->lock_errno = ring->lock_errno;
    out->broken = is_broken(ring) ? 1 : 0;
}

/* ---- the two sides: who they are and whether they live ---------------------------------- */

static uint64_t own_pidns(void)
{
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int sc_ring_claim(sc_ring *ring, uint32_t sides)
{
    if (ring == NULL || sides == 0 || (sides & ~(uint32_t)(SC_RING_WRITER | SC_RING_READER)))
        return -EINVAL;
    struct sc_ring_shared *sh = ring->shared;
    const int32_t pid = (int32_t)getpid();
    const uint64_t ns = own_pidns();
    if (sides & SC_RING_WRITER) {
        /* state last: a peer that sees OPEN sees this pid (a peer reading in between may see
         * the previous claim's pid with state NONE: "not claimed yet", never a wrong pid) */
        atomic_store_explicit(&sh->writer_state, SC_RING_PEER_NONE, memory_order_release);
        atomic_store_explicit(&sh->writer_pid, pid, memory_order_relaxed);
        atomic_store_explicit(&sh->writer_pidns, ns, memory_order_relaxed);
        atomic_store_explicit(&sh->writer_state, SC_RING_PEER_OPEN, memory_order_release);
    }
    if (sides & SC_RING_READER) {
        atomic_store_explicit(&sh->reader_state, SC_RING_PEER_NONE, memory_order_release);
        atomic_store_explicit(&sh->reader_pid, pid, memory_order_relaxed);
        atomic_store_explicit(&sh->reader_pidns, ns, memory_order_relaxed);
        atomic_store_explicit(&sh->reader_state, SC_RING_PEER_OPEN, memory_order_release);
    }
    atomic_fetch_or_explicit(&ring->claimed, sides, memory_order_acq_rel);
    return 0;
}

static void leave_side(_Atomic int32_t *pid, _Atomic uint32_t *state)
{
    /* Only the process that holds the claim says goodbye: a forked child closing its copy
     * of the handle, or a claim a newer process made since, is left alone. */
    if (atomic_load_explicit(pid, memory_order_relaxed) != (int32_t)getpid())
        return;
    uint32_t open = SC_RING_PEER_OPEN;
    atomic_compare_exchange_strong_explicit(state, &open, SC_RING_PEER_CLOSED,
                                            memory_order_acq_rel, memory_order_relaxed);
}

void sc_ring_leave(sc_ring *ring, uint32_t sides)
{
    if (ring == NULL)
        return;
    int32_t mapped_in = atomic_load_explicit(&ring->mapped_in, memory_order_relaxed);
    if (mapped_in != 0 && mapped_in != (int32_t)getpid())
        return; /* a forked child's copy of a MADV_DONTFORK handle: no mapping to touch */
    uint32_t held = atomic_fetch_and_explicit(&ring->claimed, ~sides, memory_order_acq_rel);
    sides &= held;
    if (sides == 0)
        return;
    struct sc_ring_shared *sh = ring->shared;
    if (sides & SC_RING_WRITER)
        leave_side(&sh->writer_pid, &sh->writer_state);
    if (sides & SC_RING_READER)
        leave_side(&sh->reader_pid, &sh->reader_state);
    sc_ring_wake(ring); /* a peer waiting on us looks again, and finds us gone */
}

uint32_t sc_ring_claimed(const sc_ring *ring)
{
    return atomic_load_explicit(&ring->claimed, memory_order_acquire);
}

int sc_ring_get_peer(const sc_ring *ring, uint32_t side, sc_ring_peer *out)
{
    const struct sc_ring_shared *sh = ring->shared;
    if (side == SC_RING_WRITER) {
        out->state = atomic_load_explicit(&sh->writer_state, memory_order_acquire);
        out->pid = atomic_load_explicit(&sh->writer_pid, memory_order_relaxed);
        out->pidns = atomic_load_explicit(&sh->writer_pidns, memory_order_relaxed);
    } else if (side == SC_RING_READER) {
        out->state = atomic_load_explicit(&sh->reader_state, memory_order_acquire);
        out->pid = atomic_load_explicit(&sh->reader_pid, memory_order_relaxed);
        out->pidns = atomic_load_explicit(&sh->reader_pidns, memory_order_relaxed);
    } else {
        return -EINVAL;
    }
    if (out->state > SC_RING_PEER_CLOSED || (out->state != SC_RING_PEER_NONE && out->pid <= 0))
        out->state = SC_RING_PEER_NONE; /* what no honest peer stores: nobody we can name */
    return 0;
}

uint64_t sc_ring_own_pidns(void)
{
    return own_pidns();
}

uint32_t sc_ring_peer_state(const sc_ring *ring, uint32_t side)
{
    const struct sc_ring_shared *sh = ring->shared;
    uint32_t state = atomic_load_explicit(side == SC_RING_WRITER ? &sh->writer_state
                                                                 : &sh->reader_state,
                                          memory_order_acquire);
    return state <= SC_RING_PEER_CLOSED ? state : SC_RING_PEER_NONE;
}

int sc_ring_writer_closed(const sc_ring *ring)
{
    return atomic_load_explicit(&ring->shared->writer_state, memory_order_acquire) ==
           SC_RING_PEER_CLOSED;
}
