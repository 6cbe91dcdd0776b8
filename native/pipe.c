/* Pipe primitives for the pipe sink: vmsplice with its double-buffer rule, splice, drains.
 *
 * Facts this code stands on (verified on the project's kernel, see ../shared/ENV.md):
 * - vmsplice() references the user pages; a page rewritten before the reader consumed it
 *   changes what the reader gets (SPLICE_F_GIFT changes nothing for ordinary readers).
 * - A pipe holds at most F_GETPIPE_SZ / PAGE_SIZE page buffers.  So once a page-aligned half of
 *   exactly the pipe's size has been spliced in whole, no page of the other half is still in
 *   the pipe, and that other half may be rewritten.  A reader that splices or tees our pages
 *   onward can still hold references after that point: such consumers need zero_copy off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "streamcore.h"

/* SIGPIPE goes to the thread that wrote; blocking it here turns a vanished reader into EPIPE
 * for this thread without touching the process's handlers (the host may rely on them). */
static void block_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* A SIGPIPE left pending by our own write must not reach the thread later. */
static void discard_pending_sigpipe(void)
{
    sigset_t pending, set;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigtimedwait(&set, NULL, &zero);
    }
}

int64_t sc_pipe_get_size(int fd)
{
    int size = fcntl(fd, F_GETPIPE_SZ);
    return size < 0 ? -errno : size;
}

int64_t sc_pipe_set_size(int fd, uint64_t bytes)
{
    if (bytes == 0 || bytes > INT32_MAX)
        return -EINVAL;
    int size = fcntl(fd, F_SETPIPE_SZ, (int)bytes);
    return size < 0 ? -errno : size;
}

typedef ssize_t (*transfer_fn)(int fd, const char *data, size_t len);

static ssize_t vmsplice_once(int fd, const char *data, size_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return vmsplice(fd, &iov, 1, 0);
}

static ssize_t write_once(int fd, const char *data, size_t len) { return write(fd, data, len); }

static int64_t transfer_all(int fd, const void *data, uint64_t len, transfer_fn fn)
{
    block_sigpipe();
    const char *p = data;
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = fn(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            if (err == EPIPE)
                discard_pending_sigpipe();
            return -err;
        }
        done += (uint64_t)n;
    }
    return (int64_t)done;
}

int64_t sc_pipe_vmsplice(int fd, const void *data, uint64_t len)
{
    return transfer_all(fd, data, len, vmsplice_once);
}

int64_t sc_pipe_write(int fd, const void *data, uint64_t len)
{
    return transfer_all(fd, data, len, write_once);
}

int64_t sc_pipe_drain(int fd, int use_splice, int sink_fd)
{
    static __thread char scratch[1 << 16];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = use_splice ? splice(fd, NULL, sink_fd, NULL, 1 << 20, SPLICE_F_MOVE)
                               : read(fd, scratch, sizeof scratch);
        if (n == 0)
            return (int64_t)total;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        total += (uint64_t)n;
    }
}

static void fill_pattern(uint32_t *words, uint64_t count, uint64_t first)
{
    for (uint64_t i = 0; i < count; i++)
        words[i] = (uint32_t)(first + i);
}

/* Send `total` bytes from the two halves of `buffer` alternately.  With `fill`, each half is
 * filled with the counting pattern just before it is sent: safe, because the previous transfer
 * (of the other half, at least the pipe's size) completed, so the pipe holds none of it. */
static int64_t alternate_halves(int fd, char *buffer, uint64_t half, uint64_t total,
                                int zero_copy, int fill)
{
    char *halves[2] = {buffer, buffer + half};
    uint64_t sent = 0;
    for (unsigned k = 0; sent < total; k ^= 1) {
        uint64_t len = total - sent < half ? total - sent : half;
        if (fill)
            fill_pattern((uint32_t *)halves[k], (len + 3) / 4, sent / 4);
        int64_t rc = zero_copy ? sc_pipe_vmsplice(fd, halves[k], len)
                               : sc_pipe_write(fd, halves[k], len);
        if (rc < 0)
            return rc;
        sent += len;
    }
    return (int64_t)sent;
}

int64_t sc_pipe_pump_pattern(int fd, void *buffer, uint64_t half, uint64_t total, int zero_copy)
{
    long page = sysconf(_SC_PAGESIZE);
    if (half == 0 || half % (uint64_t)page || (uintptr_t)buffer % (uintptr_t)page
        || total % sizeof(uint32_t))
        return -EINVAL;
    return alternate_halves(fd, buffer, half, total, zero_copy, 1);
}

int64_t sc_pipe_send_halves(int fd, const void *buffer, uint64_t half, uint64_t total,
                            int zero_copy)
{
    if (half == 0)
        return -EINVAL;
    /* Never written through: fill is off, the cast only shares the loop. */
    return alternate_halves(fd, (char *)buffer, half, total, zero_copy, 0);
}

uint64_t sc_pattern_mismatches(const void *data, uint64_t len, uint64_t offset)
{
    const uint32_t *words = data;
    uint64_t bad = 0, first = offset / 4;
    for (uint64_t i = 0; i < len / 4; i++)
        bad += words[i] != (uint32_t)(first + i);
    return bad;
}
