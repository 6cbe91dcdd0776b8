/* Facts about the build and the calling thread, for `streamcore info` and the tests. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "streamcore.h"

#ifndef SC_BUILD_FLAGS
#error "native/build.py defines SC_BUILD_FLAGS"
#endif

const char *sc_build_flags(void) { return SC_BUILD_FLAGS; }

int sc_abi_version(void) { return SC_ABI_VERSION; }


int sc_probe_mlock(size_t bytes)
{
    if (bytes == 0)
        return -EINVAL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    int rc = mlock(p, bytes) == 0 ? 0 : -errno;
    if (rc == 0)
        munlock(p, bytes);
    munmap(p, bytes);
    return rc;
}
