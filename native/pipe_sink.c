/* pipe_sink.c: the engine's output pages into a pipe, with vmsplice and the double-buffer rule.
 *
 * The thread (one per sink, not realtime: the pipe's reader is the clock, through backpressure)
 * vmsplices the output ring's periods as soon as the mixer has rendered them, and releases a
 * page to the mixer only once the pipe can no longer hold it.  The ring is two halves, each
 * exactly the pipe's size; a pipe holds at most its size in bytes (each of its slots at most a
 * page) and gives them out in order, so once a further half's worth has gone in after a page,
 * that page has left the pipe.  Releasing period by period (period k of one half when period k
 * of the other is in) is the two-halves rule applied at the period's grain: the mixer renders
 * while the sink splices, instead of the two taking turns half by half.
 * In copy mode it write()s each period and releases it at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <limits.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"

struct sc_pipe_sink {
    sc_engine *engine;
    sc_ring *ring;
    int fd;                 /* the pipe we vmsplice/write into */
    int relay_fd;           /* -1, or the read end of our relay pipe (fd is its write end) */
    int onward_fd;          /* -1, or where every half goes on from relay_fd (file or pipe) */
    int tee_fd;             /* -1, or a second consumer that gets the same bytes */
    int tee_by_tee;         /* tee_fd is a pipe fed by tee() from the relay (zero copy) */
    int stop_fd;            /* eventfd: stop() makes it readable */
    uint64_t half_frames;
    uint32_t blocksize;
    uint32_t frame_bytes;
    int zero_copy;
    int nowait_ok;          /* pwritev2(RWF_NOWAIT) works on fd (pipes); else poll + PIPE_BUF */
    int plain_write;        /* a regular file: blocking write() of everything */
    int flushing;           /* the final flush runs: waits are bounded, stop is ignored */
    int64_t pipe_bytes;     /* F_GETPIPE_SZ of fd */
    long nap_ns;            /* the next sleep while the mixer catches up (see nap) */
    long napped_ns;         /* slept since the mixer last had something for us */
    char *prefix;           /* a header written before the first period */
    uint64_t prefix_len;
    pthread_t thread;
    int started;
    uint64_t released;      /* frames released to the mixer so far; sent - released are held */
    uint64_t chunk_frames;  /* the most one vmsplice step hands over (whole periods) */
    _Atomic uint64_t sent;  /* frames vmspliced so far (zero copy); halves = sent / half */
    _Atomic uint64_t bytes, writes, periods, reader_waits, mixer_waits;
    _Atomic int32_t error, running, finished;
};

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static int stop_requested(const sc_pipe_sink *s)
{
    struct pollfd p = {.fd = s->stop_fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* Wait until `fd` takes more data, or stop.  0: writable; 1: stop asked; -errno.  While the
 * final flush runs (stop already asked) it waits at most FLUSH_STALL_MS instead: a reader that
 * stalls then gets -ETIMEDOUT, never a hang. */
#define FLUSH_STALL_MS 2000
static int wait_writable(sc_pipe_sink *s, int fd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLOUT}, {.fd = s->stop_fd, .events = POLLIN}};
    for (;;) {
        int n = s->flushing ? poll(p, 1, FLUSH_STALL_MS) : poll(p, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ETIMEDOUT;
        if (!s->flushing && (p[1].revents & POLLIN))
            return 1;
        if (p[0].revents & (POLLERR | POLLHUP))
            return -EPIPE;
        if (p[0].revents & POLLOUT)
            return 0;
    }
}

/* Hand `len` bytes to `fd` by vmsplice (zero copy) or write(), never blocking in the call
 * itself: a full pipe is waited for in poll(), which also sees stop.  0, 1 (stopped), -errno. */
static int transfer(sc_pipe_sink *s, int fd, const char *data, uint64_t len, int splice_pages)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t n;
        if (splice_pages) {
            struct iovec iov = {.iov_base = (void *)(data + done), .iov_len = len - done};
            n = vmsplice(fd, &iov, 1, SPLICE_F_NONBLOCK);
        } else {
            /* write() to a blocking pipe blocks until ALL is written; RWF_NOWAIT writes what
             * fits and says EAGAIN (the caller's descriptor stays blocking, as it may share it). */
            struct iovec iov = {.iov_base = (void *)(data + done), .iov_len = len - done};
            n = s->plain_write ? write(fd, iov.iov_base, iov.iov_len)
                : s->nowait_ok ? pwritev2(fd, &iov, 1, -1, RWF_NOWAIT) : -1;
            if (n < 0 && s->nowait_ok && errno == EOPNOTSUPP)
                s->nowait_ok = 0; /* an old kernel: see below */
            if (!s->nowait_ok && !s->plain_write) {
                /* After POLLOUT a pipe or socket takes PIPE_BUF bytes without blocking. */
                iov.iov_len = iov.iov_len < PIPE_BUF ? iov.iov_len : PIPE_BUF;
                int w = wait_writable(s, fd);
                if (w != 0)
                    return w;
                n = write(fd, iov.iov_base, iov.iov_len);
            }
            if (n > 0)
                count(&s->writes, 1);
        }
        if (n > 0) {
            done += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        if (n < 0 && errno == EINTR)
            continue;
        count(&s->reader_waits, 1);
        int w = wait_writable(s, fd);
        if (w != 0)
            return w;
    }
    return 0;
}

/* One splice or tee step out of the relay: 0 with *moved > 0 on progress, 0 with *moved == 0
 * to try again (the output became writable), 1 when stop was asked, -errno on failure. */
static int move_step(sc_pipe_sink *s, int to, uint64_t len, int duplicate, uint64_t *moved)
{
    *moved = 0;
    ssize_t n = duplicate ? tee(s->relay_fd, to, len, SPLICE_F_NONBLOCK)
                          : splice(s->relay_fd, NULL, to, NULL, len,
                                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        *moved = (uint64_t)n;
        return 0;
    }
    if (n == 0)
        return -EIO; /* the relay ran dry: cannot happen while `len` bytes are in it */
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN)
        return -errno;
    count(&s->reader_waits, 1);
    return wait_writable(s, to);
}

/* Move `len` bytes from the relay pipe on to onward_fd, tee-ing each piece into tee_fd first.
 * tee() leaves the relay as it is, so exactly what was tee'd is then spliced on: both
 * consumers get the same bytes in the same order, and neither is larger than a half, so the
 * release rule of step() (a page is free once a half more went in after it) holds for both. */
static int relay_onward(sc_pipe_sink *s, uint64_t len)
{
    while (len > 0) {
        uint64_t piece = len;
        if (s->tee_by_tee) {
            int rc = move_step(s, s->tee_fd, len, 1, &piece);
            if (rc)
                return rc;
            if (piece == 0)
                continue;
        }
        while (piece > 0) {
            uint64_t n;
            int rc = move_step(s, s->onward_fd, piece, 0, &n);
            if (rc)
                return rc;
            piece -= n;
            len -= n;
        }
    }
    return 0;
}

/* vmsplice into our relay and move on whatever went in, until all `len` bytes have: the relay
 * has only us as its reader, so it must be emptied between vmsplices.  (A run of periods that
 * is not page-aligned spans one pipe slot more than its length suggests, and a relay of a few
 * slots takes only part of it at a time.) */
static int through_relay(sc_pipe_sink *s, const char *data, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        struct iovec iov = {.iov_base = (void *)(data + done), .iov_len = len - done};
        ssize_t n = vmsplice(s->fd, &iov, 1, SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno; /* EAGAIN included: the relay is empty here, so it cannot be full */
        }
        int rc = relay_onward(s, (uint64_t)n);
        if (rc)
            return rc;
        done += (uint64_t)n;
    }
    return 0;
}

static int hand_over(sc_pipe_sink *s, const char *data, uint64_t len, int splice_pages)
{
    int rc;
    if (splice_pages && s->relay_fd >= 0) {
        rc = through_relay(s, data, len);
    } else {
        rc = transfer(s, s->relay_fd >= 0 ? s->onward_fd : s->fd, data, len, splice_pages);
    }
    if (rc == 0 && s->tee_fd >= 0 && !(splice_pages && s->tee_by_tee))
        rc = transfer(s, s->tee_fd, data, len, 0); /* the tee branch gets a copy */
    if (rc == 0)
        count(&s->bytes, len);
    return rc;
}

static void release(sc_pipe_sink *s, uint64_t frames)
{
    sc_ring_read_advance(s->ring, frames);
    uint64_t periods = frames / s->blocksize;
    count(&s->periods, periods);
    sc_engine_periods_consumed(s->engine, (uint32_t)periods, 0); /* one wake for them all */
}

/* The mixer renders a released half within a fraction of a millisecond of its wake, so the
 * sink naps in short steps for the first NAP_PATIENCE_NS (a coarse nap would add its own
 * length to every half); past that the mixer is behind (starved, demoted) and the naps double
 * up to NAP_MAX_NS, so a late mixer does not make this thread spin. */
#define NAP_MIN_NS 20000
#define NAP_MAX_NS 1000000
#define NAP_PATIENCE_NS 2000000
static void nap(sc_pipe_sink *s)
{
    struct timespec t = {0, s->nap_ns};
    nanosleep(&t, NULL);
    s->napped_ns += s->nap_ns;
    if (s->napped_ns > NAP_PATIENCE_NS)
        s->nap_ns = s->nap_ns * 2 > NAP_MAX_NS ? NAP_MAX_NS : s->nap_ns * 2;
}

static void nap_reset(sc_pipe_sink *s)
{
    s->nap_ns = NAP_MIN_NS;
    s->napped_ns = 0;
}

/* One step: 0 went on, 1 stopped, -errno failed. */
static int step(sc_pipe_sink *s)
{
    int64_t readable = sc_ring_readable(s->ring);
    if (readable < 0)
        return (int)readable;
    if (!s->zero_copy) {
        if ((uint64_t)readable < s->blocksize) {
            count(&s->mixer_waits, 1);
            nap(s);
            return stop_requested(s);
        }
        nap_reset(s);
        /* Every whole period rendered goes in one write: copied, so it may be released at once. */
        uint64_t frames = (uint64_t)readable - (uint64_t)readable % s->blocksize;
        void *p;
        sc_ring_read_region(s->ring, frames, &p);
        int rc = hand_over(s, p, frames * s->frame_bytes, 0);
        if (rc == 0)
            release(s, frames);
        return rc;
    }
    const uint64_t sent = atomic_load_explicit(&s->sent, memory_order_relaxed);
    const uint64_t held = sent - s->released;
    const uint64_t unsent = (uint64_t)readable - held; /* rendered, not yet in the pipe */
    if (unsent < s->blocksize) {
        count(&s->mixer_waits, 1);
        nap(s);
        return stop_requested(s);
    }
    nap_reset(s);
    uint64_t chunk = unsent < s->chunk_frames ? unsent : s->chunk_frames;
    chunk -= chunk % s->blocksize;
    void *p;
    sc_ring_read_region(s->ring, held + chunk, &p);
    int rc = hand_over(s, (const char *)p + held * s->frame_bytes, chunk * s->frame_bytes, 1);
    if (rc != 0)
        return rc;
    count(&s->sent, chunk);
    /* A half's worth went in after everything up to sent - half_frames: that has left the pipe
     * (and any pipe it went on to, each no larger), so the mixer may have it. */
    const uint64_t now_sent = sent + chunk;
    if (now_sent > s->half_frames && now_sent - s->half_frames > s->released) {
        uint64_t frames = now_sent - s->half_frames - s->released;
        release(s, frames);
        s->released += frames;
    }
    return 0;
}

static void *sink_main(void *arg)
{
    sc_pipe_sink *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE); /* a vanished reader is EPIPE for this thread, not death */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    prctl(PR_SET_TIMERSLACK, 1000UL); /* naps of NAP_MIN_NS, not the default 50 us more */
    int rc = 0;
    if (s->prefix_len)
        rc = hand_over(s, s->prefix, s->prefix_len, 0);
    while (rc == 0)
        rc = step(s);
    if (rc < 0)
        atomic_store_explicit(&s->error, -rc, memory_order_release);
    atomic_store_explicit(&s->running, 0, memory_order_release);
    atomic_store_explicit(&s->finished, 1, memory_order_release);
    return NULL;
}

/* Is `fd` a pipe of exactly `bytes`?  (The double-buffer rule needs every pipe a half goes
 * through to hold no more than the half.) */
static int is_pipe_of(int fd, int64_t bytes)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fcntl(fd, F_GETPIPE_SZ) == bytes;
}

int sc_pipe_sink_create(sc_pipe_sink **out, sc_engine *engine, sc_ring *ring, int fd,
                        int relay_fd, int onward_fd, int tee_fd, uint64_t half_frames,
                        uint32_t blocksize, int zero_copy)
{
    *out = NULL;
    if (!engine || !ring || fd < 0 || blocksize == 0 || (onward_fd >= 0) != (relay_fd >= 0))
        return -EINVAL;
    uint32_t fb = sc_ring_frame_bytes(ring);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    int64_t pipe_bytes = fcntl(fd, F_GETPIPE_SZ); /* -1 for a file, socket or tty */
    if (zero_copy) {
        if (pipe_bytes < 0)
            return -errno;
        /* The rule needs halves of exactly the pipe's size, two of them filling the ring, in
         * whole periods. */
        if (half_frames == 0 || half_frames * fb != (uint64_t)pipe_bytes
            || half_frames % blocksize || sc_ring_capacity(ring) != 2 * half_frames)
            return -EINVAL;
        /* A pipe that a half goes on to from the relay must not hold more than a half. */
        struct stat onward;
        if (onward_fd >= 0 && fstat(onward_fd, &onward) == 0 && S_ISFIFO(onward.st_mode)
            && !is_pipe_of(onward_fd, pipe_bytes))
            return -EINVAL;
    }
    sc_pipe_sink *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0) {
        int err = errno;
        free(s);
        return -err;
    }
    s->engine = engine;
    s->ring = ring;
    s->fd = fd;
    s->onward_fd = onward_fd;
    s->relay_fd = relay_fd;
    s->tee_fd = tee_fd;
    s->tee_by_tee = zero_copy && relay_fd >= 0 && tee_fd >= 0 && is_pipe_of(tee_fd, pipe_bytes);
    s->half_frames = half_frames;
    s->blocksize = blocksize;
    s->frame_bytes = fb;
    s->zero_copy = zero_copy;
    s->nowait_ok = S_ISFIFO(st.st_mode);
    s->plain_write = S_ISREG(st.st_mode); /* a disk does not stall forever: write it all */
    s->pipe_bytes = pipe_bytes;
    s->nap_ns = NAP_MIN_NS;
    /* Half a half per step: the mixer gets pages back twice per half, so it renders while
     * the sink splices (finer steps cost more wake-ups than they save; measured with
     * bench/pipe.py). */
    s->chunk_frames = half_frames / 2 - half_frames / 2 % blocksize;
    if (s->chunk_frames < blocksize)
        s->chunk_frames = blocksize;
    *out = s;
    return 0;
}

int sc_pipe_sink_prefix(sc_pipe_sink *s, const void *data, uint64_t len)
{
    if (s->started)
        return -EBUSY;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    free(s->prefix);
    s->prefix = copy;
    s->prefix_len = len;
    return 0;
}

int sc_pipe_sink_start(sc_pipe_sink *s)
{
    if (s->started)
        return 0;
    atomic_store_explicit(&s->running, 1, memory_order_release);
    int rc = pthread_create(&s->thread, NULL, sink_main, s);
    if (rc) {
        atomic_store_explicit(&s->running, 0, memory_order_release);
        return -rc;
    }
    s->started = 1;
    return 0;
}

int sc_pipe_sink_stop(sc_pipe_sink *s, int flush)
{
    if (!s->started)
        return 0;
    uint64_t one = 1;
    if (write(s->stop_fd, &one, sizeof one) < 0)
        return -errno;
    pthread_join(s->thread, NULL);
    s->started = 0;
    atomic_store_explicit(&s->running, 0, memory_order_release);
    int rc = 0;
    if (flush && !atomic_load_explicit(&s->error, memory_order_acquire)) {
        /* Past what is already in the pipe, what is rendered goes out by copy; a reader that
         * stalls for FLUSH_STALL_MS ends it with ETIMEDOUT, not a hang. */
        const uint64_t held = atomic_load_explicit(&s->sent, memory_order_relaxed) - s->released;
        int64_t readable = sc_ring_readable(s->ring);
        if (readable > (int64_t)held) {
            void *p;
            sc_ring_read_region(s->ring, (uint64_t)readable, &p);
            uint64_t extra = (uint64_t)readable - held;
            s->flushing = 1;
            rc = hand_over(s, (const char *)p + held * s->frame_bytes,
                           extra * s->frame_bytes, 0);
            if (rc < 0)
                atomic_store_explicit(&s->error, -rc, memory_order_release);
        }
    }
    return rc < 0 ? rc : 0;
}

void sc_pipe_sink_destroy(sc_pipe_sink *s)
{
    if (!s)
        return;
    sc_pipe_sink_stop(s, 0);
    close(s->stop_fd);
    free(s->prefix);
    free(s);
}

void sc_pipe_sink_get_stats(const sc_pipe_sink *s, sc_pipe_sink_stats *out)
{
    sc_pipe_sink *m = (sc_pipe_sink *)s;
    out->bytes = atomic_load_explicit(&m->bytes, memory_order_relaxed);
    out->halves = m->half_frames /* 0 in copy mode */
                      ? atomic_load_explicit(&m->sent, memory_order_relaxed) / m->half_frames : 0;
    out->writes = atomic_load_explicit(&m->writes, memory_order_relaxed);
    out->periods = atomic_load_explicit(&m->periods, memory_order_relaxed);
    out->reader_waits = atomic_load_explicit(&m->reader_waits, memory_order_relaxed);
    out->mixer_waits = atomic_load_explicit(&m->mixer_waits, memory_order_relaxed);
    out->error = atomic_load_explicit(&m->error, memory_order_acquire);
    out->running = atomic_load_explicit(&m->running, memory_order_acquire);
    out->zero_copy = m->zero_copy;
    out->finished = atomic_load_explicit(&m->finished, memory_order_acquire);
}
