/*
 * pipe_drivers.c: test and benchmark drivers for pipes (streamcore._testing, not the shipped
 * contract): the double-buffer protocol alone on a counting pattern, the bare loop that is
 * this machine's limit, a drain, and the pattern check.  Each transfer blocks SIGPIPE for
 * its thread (rt.c): a reader that went away is -EPIPE.
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
#include "testing.h"

#include "rt.h"

typedef ssize_t (*transfer_fn)(int fd, const char *data, size_t len);

static ssize_t vmsplice_once(int fd, const char *data, size_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return vmsplice(fd, &iov, 1, 0);
}

static ssize_t write_once(int fd, const char *data, size_t len) { return write(fd, data, len); }

static int64_t transfer_all(int fd, const void *data, uint64_t len, transfer_fn fn)
{
    sc_block_sigpipe();
    const char *p = data;
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = fn(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            if (err == EPIPE)
                sc_block_sigpipe(); /* drops the SIGPIPE our own write left pending */
            return -err;
        }
        done += (uint64_t)n;
    }
    return (int64_t)done;
}

static int64_t vmsplice_all(int fd, const void *data, uint64_t len)
{
    return transfer_all(fd, data, len, vmsplice_once);
}

static int64_t write_all(int fd, const void *data, uint64_t len)
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
        int64_t rc = zero_copy ? vmsplice_all(fd, halves[k], len)
                               : write_all(fd, halves[k], len);
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
