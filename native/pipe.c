/* Pipe facts for the pipe sink and pipes.py: the pipe's size, asked and set.  (The sink's
 * transfers are in pipe_sink.c; the test and benchmark drivers of the same rule in
 * native/testing/pipe_drivers.c.)
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
