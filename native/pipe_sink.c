/* pipe_sink.c: the engine's output into a pipe, a file or a socket, whole and in order.
 *
 * Who writes.  Straight into a pipe (no relay, no tee) the mixer itself is the writer: each
 * cycle it hands over what it rendered, as much as the pipe takes without blocking (vmsplice,
 * or pwritev2 with RWF_NOWAIT for a copy), renders into what came back, and waits in poll()
 * for the pipe's reader when the pipe is full (the reader is the clock) or, paced, for the
 * next period's time.  One thread does the work of two: on a 2-core machine a third busy
 * thread costs more than the rendering itself.  Every other case (a file or a tee behind the
 * relay, a socket, a kernel without RWF_NOWAIT for pipes) has a writer thread of its own, not
 * realtime: a file's writes must never stall the mixer.
 *
 * When a vmspliced page may be written again.  The pipe holds references to the ring's pages,
 * not copies.  Only we write into our pipes, and a pipe gives bytes out in order, so of the
 * bytes we sent all but the last FIONREAD ones have left it: a page goes back to the mixer
 * once it is past that point in every pipe it went into (the target, a tee pipe).  This holds
 * whatever the pipe's size, also after its reader enlarged it.  It does not hold for a reader
 * that splices or tees the pages onward (pv, a relay): they leave our pipe still referenced.
 * That is why zero copy into a pipe is an opt-in (Python's PipeSink says so) and a copy the
 * default; into a regular file the pages go through our own relay and splice() copies them
 * into the file, which is always safe.
 *
 * Streams have ends: the sink sends exactly the frames of the run up to the engine's end
 * (sc_engine_end_frame), never the silence after it in the last period.
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
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <limits.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "streamcore.h"

#include "driver.h"

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
    _Atomic uint64_t prefix_sent; /* bytes of it in the pipe: once, not again on a restart */
    pthread_t thread;
    int started;
    uint64_t released;      /* frames released to the mixer so far */
    uint64_t chunk_frames;  /* the most one vmsplice step of the thread hands over */
    _Atomic uint64_t sent;  /* ring bytes handed over so far; sent - released * frame_bytes
                               are held (in the pipe, or maybe); halves = sent / pipe_bytes,
                               bytes = prefix_sent + sent */
    _Atomic uint64_t writes, periods, reader_waits, mixer_waits;
    _Atomic int32_t error, running, finished;
    int by_mixer;           /* the mixer is the writer, through this sink's driver (below): no
                               thread; the engine uses `driver` from its start to its stop */
    sc_driver driver;
    int last_pump;          /* driver: what the cycle's hand-over found (PUMP_DONE/FULL) */
    int need_wait;          /* driver: wait for the reader before the next cycle */
    _Atomic int32_t stop_asked; /* set before the stop eventfd is written */
    int probe_fds[2];       /* pipes that may hold our pages (FIONREAD), -1 if none */
    int64_t seen_pipe_bytes; /* the writer's: the largest size probe_fds[0] was seen at */
    _Atomic uint64_t resized; /* times a pipe was seen larger than at the start */
    int64_t pace_rate;      /* paced: frames per second (0: as fast as the reader takes) */
    uint64_t pace_lead;     /* paced: frames sent ahead of the clock */
    int64_t pace_origin_ns; /* paced: when frame 0 of the run was due (0: not yet sent) */
    uint64_t run_base;      /* `sent` at the run's frame 0 (ring bytes from the ring's start:
                               the sink is the ring's reader from its first frame on) */
    size_t map_bytes;       /* this struct is mmap'ed and mlocked: the mixer touches it */
};

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

int sc_pipe_sink_stop_asked(const sc_pipe_sink *s)
{
    return atomic_load_explicit(&((sc_pipe_sink *)s)->stop_asked, memory_order_acquire);
}

/* One non-blocking vmsplice of what the pipe takes now: the bytes taken (> 0), or -errno
 * (-EAGAIN: the pipe is full). */
static ssize_t splice_now(int fd, const char *data, uint64_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    for (;;) {
        ssize_t n = vmsplice(fd, &iov, 1, SPLICE_F_NONBLOCK);
        if (n > 0)
            return n;
        if (n == 0)
            return -EIO;
        if (errno != EINTR)
            return -errno;
    }
}

/* Wait until `fd` takes more data, or stop.  0: writable; 1: stop asked; -errno.  Once stop is
 * asked (the final flush, or a step that must finish: see transfer) it waits at most
 * FLUSH_STALL_MS for the reader: a reader that stalls then gets -ETIMEDOUT, never a hang. */
#define FLUSH_STALL_MS 2000
static int wait_writable(sc_pipe_sink *s, int fd, int must_finish)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLOUT}, {.fd = s->stop_fd, .events = POLLIN}};
    int bounded = s->flushing;
    for (;;) {
        int n = bounded ? poll(p, 1, FLUSH_STALL_MS) : poll(p, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ETIMEDOUT;
        if (!bounded && (p[1].revents & POLLIN)) {
            if (!must_finish)
                return 1;
            bounded = 1;
            continue;
        }
        if (p[0].revents & (POLLERR | POLLHUP))
            return -EPIPE;
        if (p[0].revents & POLLOUT)
            return 0;
    }
}

/* Hand `len` bytes to `fd` by vmsplice (zero copy) or write(), never blocking in the call
 * itself: a full pipe is waited for in poll(), which also sees stop.  0, 1 (stopped), -errno;
 * *done says how much went in either way.  With `must_finish` a stop does not interrupt it
 * (the bytes are owed to this consumer: see hand_over). */
static int transfer(sc_pipe_sink *s, int fd, const char *data, uint64_t len, int splice_pages,
                    int must_finish, uint64_t *done)
{
    *done = 0;
    while (*done < len) {
        ssize_t n;
        struct iovec iov = {.iov_base = (void *)(data + *done), .iov_len = len - *done};
        if (splice_pages) {
            n = vmsplice(fd, &iov, 1, SPLICE_F_NONBLOCK);
        } else {
            /* write() to a blocking pipe blocks until ALL is written; RWF_NOWAIT writes what
             * fits and says EAGAIN (the caller's descriptor stays blocking, as it may share it). */
            n = s->plain_write ? write(fd, iov.iov_base, iov.iov_len)
                : s->nowait_ok ? pwritev2(fd, &iov, 1, -1, RWF_NOWAIT) : -1;
            if (n < 0 && s->nowait_ok && errno == EOPNOTSUPP)
                s->nowait_ok = 0; /* an old kernel: see below */
            if (!s->nowait_ok && !s->plain_write) {
                /* After POLLOUT a pipe or socket takes PIPE_BUF bytes without blocking. */
                iov.iov_len = iov.iov_len < PIPE_BUF ? iov.iov_len : PIPE_BUF;
                int w = wait_writable(s, fd, must_finish);
                if (w != 0)
                    return w;
                n = write(fd, iov.iov_base, iov.iov_len);
            }
            if (n > 0)
                count(&s->writes, 1);
        }
        if (n > 0) {
            *done += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        if (n < 0 && errno == EINTR)
            continue;
        count(&s->reader_waits, 1);
        int w = wait_writable(s, fd, must_finish);
        if (w != 0)
            return w;
    }
    return 0;
}

/* One splice or tee step out of the relay: 0 with *moved > 0 on progress, 0 with *moved == 0
 * to try again (the output became writable), -errno on failure.  What is in the relay is owed
 * onward, so a stop does not interrupt it. */
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
    return wait_writable(s, to, 1);
}

/* Move `len` bytes from the relay pipe on to onward_fd, tee-ing each piece into tee_fd first.
 * tee() leaves the relay as it is, so exactly what was tee'd is then spliced on: both
 * consumers get the same bytes in the same order, and neither is larger than a half, so the
 * release rule (a page is free once a half more went in after it) holds for both. */
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
 * slots takes only part of it at a time.)  Stop is seen between vmsplices only. */
static int through_relay(sc_pipe_sink *s, const char *data, uint64_t len, uint64_t *done)
{
    *done = 0;
    while (*done < len) {
        if (*done > 0 && sc_pipe_sink_stop_asked(s) && !s->flushing)
            return 1;
        ssize_t n = splice_now(s->fd, data + *done, len - *done);
        if (n < 0)
            return (int)n; /* EAGAIN included: the relay is empty here, so it cannot be full */
        int rc = relay_onward(s, (uint64_t)n);
        if (rc)
            return rc;
        *done += (uint64_t)n;
    }
    return 0;
}

/* Hand `len` bytes over: 0 all went, 1 stop asked (*done of them went), -errno.  A stop may
 * cut the stream between any two bytes (the caller counts *done, and the final flush goes on
 * from there), but never between the target and the tee: what the target got, the tee gets. */
static int hand_over(sc_pipe_sink *s, const char *data, uint64_t len, int splice_pages,
                     uint64_t *done)
{
    int rc;
    if (splice_pages && s->relay_fd >= 0) {
        rc = through_relay(s, data, len, done);
    } else {
        rc = transfer(s, s->relay_fd >= 0 ? s->onward_fd : s->fd, data, len, splice_pages, 0,
                      done);
    }
    if (rc >= 0 && *done > 0 && s->tee_fd >= 0 && !(splice_pages && s->tee_by_tee)) {
        uint64_t copied; /* the tee branch gets a copy */
        int trc = transfer(s, s->tee_fd, data, *done, 0, 1, &copied);
        if (trc < 0)
            rc = trc;
    }
    return rc;
}

/* Give the mixer back every whole period that has left the pipe: a page is free once a half's
 * worth (the pipe's size) went in after it (and into any pipe it went on to, each no larger).
 * Returns the periods released; `wake` says the mixer is another thread (else the caller is
 * the mixer and counts them itself). */
/* Bytes that may still be in a pipe holding our pages: the most any of them holds now. */
static uint64_t in_pipes(sc_pipe_sink *s)
{
    if (s->probe_fds[0] < 0)
        return 0; /* into a file through our relay: splice() copied the pages */
    uint64_t most = 0;
    for (int i = 0; i < 2; i++) {
        int held = 0;
        if (s->probe_fds[i] < 0)
            continue;
        if (ioctl(s->probe_fds[i], FIONREAD, &held) < 0)
            return UINT64_MAX; /* cannot tell: keep everything */
        if ((uint64_t)held > most)
            most = (uint64_t)held;
    }
    /* Its reader may enlarge it (F_SETPIPE_SZ on the read end): the rule above still holds,
     * and the figures say so. */
    const int64_t size = fcntl(s->probe_fds[0], F_GETPIPE_SZ);
    if (size > s->seen_pipe_bytes) {
        count(&s->resized, 1);
        s->seen_pipe_bytes = size;
    }
    return most;
}

static uint32_t release_sent(sc_pipe_sink *s, int wake)
{
    const uint64_t sent = atomic_load_explicit(&s->sent, memory_order_relaxed);
    const uint64_t lag = s->zero_copy ? in_pipes(s) : 0; /* copies: none */
    if (sent <= lag)
        return 0;
    uint64_t frames = (sent - lag) / s->frame_bytes;
    frames -= frames % s->blocksize;
    if (frames <= s->released)
        return 0;
    const uint64_t n = frames - s->released;
    sc_ring_read_advance(s->ring, n);
    s->released = frames;
    const uint32_t periods = (uint32_t)(n / s->blocksize);
    count(&s->periods, periods);
    if (wake)
        sc_engine_periods_consumed(s->engine, periods, 0); /* one wake for them all */
    return periods;
}

static void note_sent(sc_pipe_sink *s, uint64_t n);

/* Bytes of this run handed over so far. */
static uint64_t run_sent(sc_pipe_sink *s)
{
    const uint64_t sent = atomic_load_explicit(&s->sent, memory_order_relaxed);
    return sent > s->run_base ? sent - s->run_base : 0;
}

/* Paced: the frames of the run due by now (the lead included); as fast as the reader takes
 * them otherwise.  The clock starts with the first frame sent. */
static uint64_t due_frames(sc_pipe_sink *s)
{
    if (!s->pace_rate || s->flushing)
        return UINT64_MAX;
    if (!s->pace_origin_ns)
        return s->pace_lead;
    const int64_t ns = sc_now_ns() - s->pace_origin_ns;
    return (uint64_t)((__int128)ns * s->pace_rate / 1000000000) + s->pace_lead;
}

/* Paced: ns until `frames` of the run are due (0: they are). */
static int64_t ns_until_due(sc_pipe_sink *s, uint64_t frames)
{
    if (!s->pace_rate || !s->pace_origin_ns || frames <= s->pace_lead)
        return 0;
    const int64_t at = s->pace_origin_ns
                       + (int64_t)((__int128)(frames - s->pace_lead) * 1000000000 / s->pace_rate);
    const int64_t left = at - sc_now_ns();
    return left > 0 ? left : 0;
}

/* Rendered bytes not yet handed over, and where they start (*at): never past the run's end
 * (the silence after the last voice's last frame in its period) nor, paced, past what is due. */
static uint64_t unsent_bytes(sc_pipe_sink *s, const char **at)
{
    int64_t readable = sc_ring_readable(s->ring);
    if (readable <= 0)
        return 0;
    const uint64_t sent = atomic_load_explicit(&s->sent, memory_order_relaxed);
    const uint64_t held = sent - s->released * s->frame_bytes;
    uint64_t len = (uint64_t)readable * s->frame_bytes - held;
    uint64_t limit = due_frames(s);
    const uint64_t deliverable = sc_engine_deliverable(s->engine);
    limit = deliverable < limit ? deliverable : limit;
    if (limit != UINT64_MAX) {
        const uint64_t stop_at = s->run_base + limit * s->frame_bytes;
        const uint64_t room = stop_at > sent ? stop_at - sent : 0;
        len = len < room ? len : room;
    }
    void *p;
    sc_ring_read_region(s->ring, (uint64_t)readable, &p);
    *at = (const char *)p + held;
    return len;
}

/* Count `n` ring bytes handed over; paced, the first of a run starts its clock. */
static void note_sent(sc_pipe_sink *s, uint64_t n)
{
    count(&s->sent, n);
    if (s->pace_rate && !s->pace_origin_ns && run_sent(s) > 0)
        s->pace_origin_ns = sc_now_ns();
}

/* The run's end is published and all of it is handed over. */
static int run_complete(sc_pipe_sink *s)
{
    const int64_t end = sc_engine_end_frame(s->engine);
    return end >= 0 && run_sent(s) >= (uint64_t)end * s->frame_bytes;
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

/* Hand over what is left of the header (before the first period): as hand_over. */
static int send_prefix(sc_pipe_sink *s)
{
    const uint64_t sent = atomic_load_explicit(&s->prefix_sent, memory_order_relaxed);
    if (sent >= s->prefix_len)
        return 0;
    uint64_t done = 0;
    int rc = hand_over(s, s->prefix + sent, s->prefix_len - sent, 0, &done);
    count(&s->prefix_sent, done);
    return rc;
}

/* Hand over `len` ring bytes from `at` (the first unsent one) and give back what left the
 * pipe: as hand_over. */
static int send_ring(sc_pipe_sink *s, const char *at, uint64_t len, int splice_pages)
{
    uint64_t done = 0;
    int rc = hand_over(s, at, len, splice_pages, &done);
    note_sent(s, done);
    release_sent(s, 1);
    return rc;
}

/* One step of the writer thread: 0 went on, 1 stopped, -errno failed. */
static int step(sc_pipe_sink *s)
{
    const char *at = NULL;
    const uint64_t period = (uint64_t)s->blocksize * s->frame_bytes;
    uint64_t chunk = unsent_bytes(s, &at);
    /* The run's last piece (its end is known) may be shorter than a period. */
    const int tail = chunk > 0 && chunk < period && sc_engine_deliverable(s->engine) != UINT64_MAX;
    if (chunk < period && !(chunk > 0 && !s->zero_copy) && !tail) {
        release_sent(s, 1); /* what left the pipes since: the mixer may be waiting for it */
        count(&s->mixer_waits, 1);
        nap(s);
        return sc_pipe_sink_stop_asked(s);
    }
    nap_reset(s);
    if (s->zero_copy && !tail) {
        const uint64_t most = s->chunk_frames * s->frame_bytes;
        chunk = chunk < most ? chunk : most;
        chunk -= chunk % period;
    } /* copies: everything rendered in one write, released as it goes */
    return send_ring(s, at, chunk, s->zero_copy);
}

/* ---- the mixer as the writer: the sink's driver (driver.h) ---------------------------------
 * The engine's mixer thread runs these from sc_engine_start to sc_engine_stop: no allocation,
 * no lock of ours, no blocking call but the wait for the reader (poll on the pipe and the stop
 * eventfd, bounded so a stop is always seen).  Each cycle hands over what is rendered, as much
 * as the pipe takes now (`take`), renders into the pages that came back, and waits in poll()
 * only when the pipe is full or nothing was rendered.  The reader is the clock: there is no
 * wake-up latency to measure (SC_TRACE_PIPE). */
#define PUMP_DONE 0 /* all that was rendered is in the pipe: render more */
#define PUMP_FULL 1 /* the pipe took what it could: wait for its reader */
#define PIPE_WAIT_MS 100

/* One non-blocking write() of what the pipe takes now (RWF_NOWAIT: the caller's descriptor
 * stays blocking, as others may share it): the bytes taken, or -errno (-EAGAIN: full). */
static ssize_t write_now(sc_pipe_sink *s, const char *data, uint64_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    for (;;) {
        ssize_t n;
        if (s->nowait_ok) {
            n = pwritev2(s->fd, &iov, 1, -1, RWF_NOWAIT);
            if (n < 0 && errno == EOPNOTSUPP) {
                /* Refused by some pipes (one that holds vmspliced pages, on 6.x): from now
                 * on the portable way below. */
                s->nowait_ok = 0;
                continue;
            }
        } else {
            /* A pipe that polls writable takes PIPE_BUF bytes without blocking (we are its
             * only writer). */
            struct pollfd p = {.fd = s->fd, .events = POLLOUT};
            int ready = poll(&p, 1, 0);
            if (ready < 0 && errno == EINTR)
                continue;
            if (ready == 0)
                return -EAGAIN;
            if (ready < 0)
                return -errno;
            if (p.revents & (POLLERR | POLLHUP))
                return -EPIPE;
            iov.iov_len = len < PIPE_BUF ? len : PIPE_BUF;
            n = write(s->fd, iov.iov_base, iov.iov_len);
        }
        if (n > 0) {
            count(&s->writes, 1);
            return n;
        }
        if (n == 0)
            return -EIO;
        if (errno != EINTR)
            return -errno;
    }
}

/* Hand what is rendered to the pipe, the header first, as much as it takes now.  PUMP_DONE,
 * PUMP_FULL or -errno (EPIPE: the reader is gone). */
static int pump_pieces(sc_pipe_sink *s)
{
    for (;;) {
        const uint64_t header = s->prefix_len - atomic_load_explicit(&s->prefix_sent,
                                                                      memory_order_relaxed);
        const char *at = s->prefix + (s->prefix_len - header);
        const uint64_t len = header ? header : unsent_bytes(s, &at); /* the header goes first */
        if (len == 0)
            return PUMP_DONE;
        /* The header's pages are never written again: vmsplice would be safe for them, but a
         * copy stream writes it like the rest (RWF_NOWAIT refuses a pipe holding vmspliced
         * pages). */
        ssize_t n = s->zero_copy ? splice_now(s->fd, at, len) : write_now(s, at, len);
        if (n == -EAGAIN) {
            count(&s->reader_waits, 1);
            return PUMP_FULL;
        }
        if (n < 0)
            return (int)n;
        if (header)
            count(&s->prefix_sent, (uint64_t)n);
        else
            note_sent(s, (uint64_t)n);
    }
}

/* pump_pieces, then give back once what has left the pipe (a release asks the kernel: once
 * per cycle, not once per piece); *periods: periods given back. */
static int pump(sc_pipe_sink *s, uint32_t *periods)
{
    const int rc = pump_pieces(s);
    *periods = release_sent(s, 0);
    return rc;
}

/* A new run of either writer (control thread, before it starts): the last stop's wake-up is
 * spent, and the state of the last run forgotten. */
static void begin_run(sc_pipe_sink *s)
{
    uint64_t stale;
    while (read(s->stop_fd, &stale, sizeof stale) > 0)
        ;
    atomic_store_explicit(&s->stop_asked, 0, memory_order_release);
    atomic_store_explicit(&s->error, 0, memory_order_release);
    /* The run's frame 0 in the ring (after the engine's prefill: both writers begin after
     * it); what an earlier run left unsent lies before it and goes first. */
    s->run_base = sc_engine_run_start(s->engine) * s->frame_bytes;
    s->pace_origin_ns = 0;
    atomic_store_explicit(&s->finished, 0, memory_order_release);
    atomic_store_explicit(&s->running, 1, memory_order_release);
}

/* Control thread, in sc_engine_start: a new run of the mixer as the writer. */
static int driver_attach(void *ctx, sc_engine *e)
{
    (void)e;
    sc_pipe_sink *s = ctx;
    begin_run(s);
    s->need_wait = 0;
    s->last_pump = PUMP_DONE;
    return 0;
}

static int driver_wait(void *ctx, sc_engine *e, sc_wake *w)
{
    (void)e;
    (void)w;
    sc_pipe_sink *s = ctx;
    if (sc_pipe_sink_stop_asked(s))
        return SC_DRIVER_STOP;
    if (s->pace_rate) { /* paced: one period when its time comes */
        const int64_t ns = ns_until_due(s, run_sent(s) / s->frame_bytes + s->blocksize);
        if (ns > 0) {
            struct pollfd stop = {.fd = s->stop_fd, .events = POLLIN};
            struct timespec t = {ns / 1000000000, ns % 1000000000};
            int n = ppoll(&stop, 1, &t, NULL);
            if (n > 0)
                return SC_DRIVER_STOP;
            if (n < 0 && errno != EINTR)
                return -errno;
        }
    }
    if (!s->need_wait)
        return SC_DRIVER_CYCLE;
    /* All rendered is in the pipe and the ring is full: the mixer waits for its pages to leave
     * a pipe that is not full (its reader enlarged it), which poll() cannot tell: a short
     * sleep, then FIONREAD again. */
    const int pages_out = s->last_pump == PUMP_DONE && s->zero_copy;
    struct pollfd p[2] = {{.fd = s->fd, .events = POLLOUT}, {.fd = s->stop_fd, .events = POLLIN}};
    int n = pages_out ? poll(&p[1], 1, 1) : poll(p, 2, PIPE_WAIT_MS);
    if (pages_out && n == 0)
        return SC_DRIVER_CYCLE;
    if (pages_out && n > 0)
        return SC_DRIVER_STOP;
    if (n < 0)
        return errno == EINTR ? SC_DRIVER_CYCLE : -errno;
    if (p[1].revents & POLLIN)
        return SC_DRIVER_STOP; /* a stop, or the engine's interrupt */
    if (p[0].revents & POLLERR)
        return -EPIPE; /* the reader closed: vmsplice would say EPIPE too */
    return SC_DRIVER_CYCLE;
}

static int driver_take(void *ctx, sc_engine *e, sc_wake *w)
{
    (void)e;
    sc_pipe_sink *s = ctx;
    w->flags |= SC_TRACE_PIPE;
    w->late_ns = 0;
    uint32_t released = 0;
    int rc = pump(s, &released);
    w->consumed += released;
    s->last_pump = rc;
    return rc < 0 ? rc : SC_DRIVER_CYCLE;
}

static void driver_rendered(void *ctx, sc_engine *e, uint32_t rendered)
{
    (void)e;
    sc_pipe_sink *s = ctx;
    s->need_wait = s->last_pump == PUMP_FULL || rendered == 0;
}

static int driver_pending(void *ctx, sc_engine *e)
{
    (void)e;
    sc_pipe_sink *s = ctx;
    const char *at = NULL;
    /* Asked once a period while the engine has nothing to play: a reader that went away
     * meanwhile is noticed now (the wait then says EPIPE), not at the next voice. */
    struct pollfd gone = {.fd = s->fd, .events = POLLOUT};
    if (poll(&gone, 1, 0) > 0 && (gone.revents & (POLLERR | POLLHUP)))
        return 1;
    return sc_pipe_sink_stop_asked(s) /* the wait then says STOP */
           || atomic_load_explicit(&s->prefix_sent, memory_order_relaxed) < s->prefix_len
           || unsent_bytes(s, &at) > 0;
}

static void driver_detach(void *ctx, sc_engine *e, int err)
{
    (void)e;
    sc_pipe_sink *s = ctx;
    if (err > 0)
        atomic_store_explicit(&s->error, err, memory_order_release);
    atomic_store_explicit(&s->running, 0, memory_order_release);
    atomic_store_explicit(&s->finished, 1, memory_order_release); /* last: stop() may go on */
}

static void driver_interrupt(void *ctx)
{
    sc_pipe_sink *s = ctx;
    uint64_t one = 1;
    ssize_t ignored = write(s->stop_fd, &one, sizeof one); /* ends a poll in driver_wait */
    (void)ignored;
}

static const sc_driver_ops pipe_driver_ops = {
    .attach = driver_attach,
    .wait = driver_wait,
    .take = driver_take,
    .rendered = driver_rendered,
    .detach = driver_detach,
    .interrupt = driver_interrupt,
    .pending = driver_pending,
};

const sc_driver *sc_pipe_sink_driver(sc_pipe_sink *s)
{
    return s->by_mixer ? &s->driver : NULL;
}

static void *sink_main(void *arg)
{
    sc_pipe_sink *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE); /* a vanished reader is EPIPE for this thread, not death */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    prctl(PR_SET_TIMERSLACK, 1000UL); /* naps of NAP_MIN_NS, not the default 50 us more */
    int rc = send_prefix(s);
    /* Stop is looked at before every step, not only when the writer naps: with a reader
     * that keeps up, a step never naps (the mixer refills what it releases), and a stop
     * waited for the reader to fall behind (a tee of two paced readers: close() took 58 s
     * and 284 s).  What is rendered and not yet sent goes out in the final flush. */
    while (rc == 0 && !sc_pipe_sink_stop_asked(s))
        rc = step(s);
    if (rc < 0)
        atomic_store_explicit(&s->error, -rc, memory_order_release);
    atomic_store_explicit(&s->running, 0, memory_order_release);
    atomic_store_explicit(&s->finished, 1, memory_order_release);
    return NULL;
}

/* Does this kernel take RWF_NOWAIT writes on pipes (6.x does)?  Asked of a pipe of our own. */
static int nowait_pipes(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return 0;
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    ssize_t n = pwritev2(p[1], &iov, 1, -1, RWF_NOWAIT);
    close(p[0]);
    close(p[1]);
    return n == 1;
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
        /* Halves in whole periods, two of them filling the ring.  The pipe's size need not
         * match them any more (a page is released by FIONREAD, whatever the size): its reader
         * may resize it at any time, even between our sizing and this check. */
        if (half_frames == 0 || half_frames % blocksize || sc_ring_capacity(ring) != 2 * half_frames)
            return -EINVAL;
    }
    /* Mapped and locked (if the limit allows), as the engine is: the mixer may be the writer,
     * and its cycle must not fault a page in. */
    size_t map_bytes = (sizeof(sc_pipe_sink) + 4095) & ~(size_t)4095;
    sc_pipe_sink *s = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (s == MAP_FAILED)
        return -ENOMEM;
    (void)mlock(s, map_bytes); /* best effort: the engine reports its own mlock failures */
    s->map_bytes = map_bytes;
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0) {
        int err = errno;
        munmap(s, map_bytes);
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
    s->seen_pipe_bytes = pipe_bytes;
    s->nap_ns = NAP_MIN_NS;
    /* The mixer writes when it can do so without ever blocking: vmsplice, or RWF_NOWAIT. */
    s->by_mixer = relay_fd < 0 && tee_fd < 0 && S_ISFIFO(st.st_mode)
                  && (zero_copy || nowait_pipes());
    /* The pipes our pages may sit in: the target, or past the relay a pipe target and a tee
     * pipe (a regular file gets copies: splice() into a file copies into its page cache). */
    s->probe_fds[0] = s->probe_fds[1] = -1;
    if (zero_copy) {
        struct stat onward;
        if (relay_fd < 0)
            s->probe_fds[0] = fd;
        else if (fstat(onward_fd, &onward) == 0 && S_ISFIFO(onward.st_mode))
            s->probe_fds[0] = onward_fd;
        if (s->tee_by_tee)
            s->probe_fds[1] = tee_fd;
        if (s->probe_fds[0] < 0) { /* only the tee pipe to watch */
            s->probe_fds[0] = s->probe_fds[1];
            s->probe_fds[1] = -1;
        }
    }
    s->driver.ops = &pipe_driver_ops;
    s->driver.ctx = s;
    atomic_store_explicit(&s->finished, 1, memory_order_relaxed); /* no writer yet */
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
    if (len == 0)
        return 0;
    if (s->prefix)
        return -EBUSY; /* one header per stream */
    /* Its own pages, never written again: the mixer vmsplices the header from them. */
    char *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return -ENOMEM;
    memcpy(copy, data, len);
    s->prefix = copy;
    s->prefix_len = len;
    return 0;
}

int sc_pipe_sink_pace(sc_pipe_sink *s, uint32_t samplerate, uint64_t lead_frames)
{
    if (s->started)
        return -EBUSY;
    s->pace_rate = samplerate;
    s->pace_lead = lead_frames;
    return 0;
}

int sc_pipe_sink_start(sc_pipe_sink *s)
{
    if (s->started)
        return 0;
    if (s->by_mixer) {
        /* The mixer writes the pipe from the engine's start (this sink's driver, attached
         * there); this only marks the stream as ours to stop. */
        s->started = 1;
        return 0;
    }
    begin_run(s);
    int rc = pthread_create(&s->thread, NULL, sink_main, s);
    if (rc) {
        atomic_store_explicit(&s->running, 0, memory_order_release);
        return -rc;
    }
    s->started = 1;
    return 0;
}

/* The mixer lets go of the pipe at its next cycle (or its wait ends with the stop eventfd);
 * a mixer that is gone has let go already.  Bounded all the same: no stop hangs. */
#define DETACH_WAIT_MS 5000
static int wait_detached(sc_pipe_sink *s)
{
    for (int i = 0; i < DETACH_WAIT_MS * 10; i++) {
        if (atomic_load_explicit(&s->finished, memory_order_acquire))
            return 0;
        struct timespec t = {0, 100000};
        nanosleep(&t, NULL);
    }
    return -ETIMEDOUT;
}

int sc_pipe_sink_stop(sc_pipe_sink *s, int flush)
{
    if (!s->started)
        return 0;
    atomic_store_explicit(&s->stop_asked, 1, memory_order_release);
    uint64_t one = 1;
    if (write(s->stop_fd, &one, sizeof one) < 0)
        return -errno;
    if (s->by_mixer)
        sc_engine_wake_for_work(s->engine); /* a mixer sleeping for want of content */
    if (s->by_mixer) {
        int rc = wait_detached(s);
        if (rc) { /* still the mixer's: nothing may be flushed from here; stats say why */
            atomic_store_explicit(&s->error, -rc, memory_order_release);
            return rc;
        }
    } else {
        pthread_join(s->thread, NULL);
    }
    s->started = 0;
    atomic_store_explicit(&s->running, 0, memory_order_release);
    int rc = 0;
    if (flush && !atomic_load_explicit(&s->error, memory_order_acquire)) {
        /* Past what is already in the pipe, what is rendered goes out by copy; a reader that
         * stalls for FLUSH_STALL_MS ends it with ETIMEDOUT, not a hang.  (The header first, if
         * a stop came before it had all gone.) */
        s->flushing = 1;
        rc = send_prefix(s);
        const char *at = NULL;
        uint64_t extra = rc == 0 ? unsent_bytes(s, &at) : 0;
        if (extra > 0)
            rc = send_ring(s, at, extra, 0);
        s->flushing = 0;
        if (rc < 0)
            atomic_store_explicit(&s->error, -rc, memory_order_release);
    }

    return rc < 0 ? rc : 0;
}

void sc_pipe_sink_destroy(sc_pipe_sink *s)
{
    if (!s)
        return;
    sc_pipe_sink_stop(s, 0);
    close(s->stop_fd);
    if (s->prefix) /* the pipe may still hold its page: munmap leaves that page to the pipe */
        munmap(s->prefix, s->prefix_len);
    munmap(s, s->map_bytes);
}

void sc_pipe_sink_get_stats(const sc_pipe_sink *s, sc_pipe_sink_stats *out)
{
    sc_pipe_sink *m = (sc_pipe_sink *)s;
    out->bytes = atomic_load_explicit(&m->prefix_sent, memory_order_relaxed)
                 + atomic_load_explicit(&m->sent, memory_order_relaxed);
    out->halves = m->zero_copy && m->pipe_bytes > 0
                      ? atomic_load_explicit(&m->sent, memory_order_relaxed)
                            / (uint64_t)m->pipe_bytes : 0;
    out->writes = atomic_load_explicit(&m->writes, memory_order_relaxed);
    out->periods = atomic_load_explicit(&m->periods, memory_order_relaxed);
    out->reader_waits = atomic_load_explicit(&m->reader_waits, memory_order_relaxed);
    out->mixer_waits = atomic_load_explicit(&m->mixer_waits, memory_order_relaxed);
    out->error = atomic_load_explicit(&m->error, memory_order_acquire);
    out->running = atomic_load_explicit(&m->running, memory_order_acquire);
    out->zero_copy = m->zero_copy;
    out->finished = atomic_load_explicit(&m->finished, memory_order_acquire);
    out->by_mixer = m->by_mixer;
    out->resized = atomic_load_explicit(&m->resized, memory_order_relaxed);
    out->paced = m->pace_rate > 0;
    out->run_complete = run_complete(m);
}
