/*
 * tap_writer.c: a C thread that writes what a ring holds to a file descriptor (a pipe, a
 * FIFO, a socket or a regular file): the capture's way out of the process with no Python in
 * the data path (`streamcore record`, Engine.record_to).  The thread is the ring's single
 * reader from start to stop.  It takes whole frames, converts them (float32 as they are, or
 * int16: rounded and clipped) into its own buffer, writes the buffer completely and only then
 * releases the frames, so what reaches the fd is exactly the ring's frames in order.  With a
 * frame limit it ends by itself after exactly that many.
 *
 * Never a hang: each write is preceded by a poll() on the fd and the stop eventfd, and a pipe
 * or socket gets at most PIPE_BUF bytes per write (poll's POLLOUT guarantees that much
 * room), so a stalled reader is waited for in poll, where a stop is seen.  A regular file
 * gets larger writes (its POLLOUT is always set).  While the ring is empty the thread sleeps
 * in poll on the stop eventfd for a millisecond at a time: not realtime, and not a busy loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "streamcore.h"

#include "rt.h"

#define CHUNK_BYTES (64 * 1024)

struct sc_tap_writer {
    sc_ring *ring;
    int fd;
    int stop_fd;
    int done_fd;               /* eventfd written when it finished or ended: Python waits on it */
    uint32_t format;           /* SC_FORMAT_F32 or SC_FORMAT_S16 */
    uint32_t channels;
    uint64_t limit;            /* frames to write, 0: until stopped */
    size_t max_write;          /* bytes per write() */
    char *buffer;              /* CHUNK_BYTES */
    sc_rt_thread thread;
    _Atomic int32_t running, finished, error;
    sc_counter frames, bytes, waits;
};

int sc_tap_writer_create(sc_tap_writer **out, sc_ring *ring, int fd, uint64_t frames,
                         uint32_t format)
{
    *out = NULL;
    if (ring == NULL || fd < 0 || sc_ring_format(ring) != SC_FORMAT_F32 ||
        (format != SC_FORMAT_F32 && format != SC_FORMAT_S16))
        return -EINVAL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    sc_tap_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return -ENOMEM;
    w->buffer = malloc(CHUNK_BYTES);
    w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->buffer == NULL || w->stop_fd < 0 || w->done_fd < 0) {
        int err = w->buffer == NULL ? ENOMEM : errno;
        free(w->buffer);
        if (w->stop_fd >= 0)
            close(w->stop_fd);
        if (w->done_fd >= 0)
            close(w->done_fd);
        free(w);
        return -err;
    }
    w->ring = ring;
    w->fd = fd;
    w->format = format;
    w->channels = sc_ring_channels(ring);
    w->limit = frames;
    w->max_write = S_ISREG(st.st_mode) ? CHUNK_BYTES : PIPE_BUF;
    *out = w;
    return 0;
}

/* 0: fd writable; 1: stop asked; -errno. */
static int wait_writable(sc_tap_writer *w)
{
    struct pollfd p[2] = {{.fd = w->fd, .events = POLLOUT}, {.fd = w->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[1].revents & POLLIN)
            return 1;
        if (p[0].revents & (POLLERR | POLLHUP))
            return -EPIPE;
        if (p[0].revents & POLLOUT)
            return 0;
    }
}

/* Write all `len` bytes: 0, 1 (stopped first), -errno. */
static int write_all(sc_tap_writer *w, const char *data, size_t len)
{
    while (len > 0) {
        int rc = wait_writable(w);
        if (rc)
            return rc;
        size_t n = len < w->max_write ? len : w->max_write;
        ssize_t k = write(w->fd, data, n);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        sc_count(&w->bytes, (uint64_t)k);
        data += k;
        len -= (size_t)k;
    }
    return 0;
}

static size_t convert(sc_tap_writer *w, const float *src, uint64_t frames)
{
    const size_t samples = (size_t)frames * w->channels;
    if (w->format == SC_FORMAT_F32) {
        memcpy(w->buffer, src, samples * sizeof(float));
        return samples * sizeof(float);
    }
    int16_t *dst = (int16_t *)w->buffer;
    for (size_t i = 0; i < samples; i++) {
        float v = src[i] * 32768.0f;
        v = v > 32767.0f ? 32767.0f : (v < -32768.0f ? -32768.0f : v);
        dst[i] = (int16_t)lrintf(isfinite(v) ? v : 0.0f);
    }
    return samples * sizeof(int16_t);
}

/* Tell a waiting Python (InputWriter.wait) to look: finished, or ended. */
static void signal_done(sc_tap_writer *w)
{
    uint64_t one = 1;
    ssize_t ignored = write(w->done_fd, &one, sizeof one);
    (void)ignored;
}

static void *writer_main(void *arg)
{
    sc_tap_writer *w = arg;
    sc_block_sigpipe(); /* a vanished reader is EPIPE, not death */
    const uint64_t chunk = CHUNK_BYTES / (w->channels * sizeof(float));
    int rc = 0;
    for (;;) {
        uint64_t want = chunk;
        if (w->limit) {
            uint64_t left = w->limit - sc_read(&w->frames);
            if (left == 0) {
                /* Done: from now on what the ring gets is dropped (released unread) until
                 * the stop, so its writer never finds it full. */
                if (!atomic_exchange_explicit(&w->finished, 1, memory_order_acq_rel))
                    signal_done(w);
                int64_t stale = sc_ring_readable(w->ring);
                if (stale > 0)
                    sc_ring_read_advance(w->ring, (uint64_t)stale);
                struct pollfd stop = {.fd = w->stop_fd, .events = POLLIN};
                if (poll(&stop, 1, 5) != 0)
                    break;
                continue;
            }
            if (left < want)
                want = left;
        }
        void *region = NULL;
        int64_t k = sc_ring_read_region(w->ring, want, &region);
        if (k < 0) {
            rc = (int)k;
            break;
        }
        if (k == 0) {
            sc_count(&w->waits, 1);
            struct pollfd stop = {.fd = w->stop_fd, .events = POLLIN};
            if (poll(&stop, 1, 1) > 0)
                break;
            continue;
        }
        size_t len = convert(w, region, (uint64_t)k);
        rc = write_all(w, w->buffer, len);
        if (rc == 1) {
            rc = 0;
            break; /* stopped mid-chunk: those frames stay in the ring */
        }
        if (rc < 0)
            break;
        sc_ring_read_advance(w->ring, (uint64_t)k);
        sc_count(&w->frames, (uint64_t)k);
    }
    if (rc < 0)
        atomic_store_explicit(&w->error, -rc, memory_order_release);
    atomic_store_explicit(&w->running, 0, memory_order_release);
    signal_done(w);
    return NULL;
}

int sc_tap_writer_start(sc_tap_writer *w)
{
    if (w->thread.started)
        return -EALREADY;
    uint64_t stale;
    while (read(w->stop_fd, &stale, sizeof stale) > 0) /* a stop of an earlier run */
        ;
    atomic_store_explicit(&w->running, 1, memory_order_release);
    int rc = sc_rt_thread_start(&w->thread, "sc-tap-writer", writer_main, w, 0, 0);
    if (rc)
        atomic_store_explicit(&w->running, 0, memory_order_release);
    return rc;
}

int sc_tap_writer_stop(sc_tap_writer *w)
{
    if (!w->thread.started)
        return 0;
    uint64_t one = 1;
    ssize_t ignored = write(w->stop_fd, &one, sizeof one);
    (void)ignored;
    sc_rt_thread_join(&w->thread);
    return 0;
}

void sc_tap_writer_destroy(sc_tap_writer *w)
{
    if (w == NULL)
        return;
    sc_tap_writer_stop(w);
    sc_rt_thread_release(&w->thread);
    close(w->stop_fd);
    close(w->done_fd);
    free(w->buffer);
    free(w);
}

int sc_tap_writer_done_fd(const sc_tap_writer *w)
{
    return w->done_fd;
}

void sc_tap_writer_get_stats(const sc_tap_writer *cw, sc_tap_writer_stats *out)
{
    sc_tap_writer *w = (sc_tap_writer *)cw;
    out->frames = sc_read(&w->frames);
    out->bytes = sc_read(&w->bytes);
    out->waits = sc_read(&w->waits);
    out->error = atomic_load_explicit(&w->error, memory_order_acquire);
    out->running = atomic_load_explicit(&w->running, memory_order_acquire);
    out->finished = atomic_load_explicit(&w->finished, memory_order_acquire);
}
