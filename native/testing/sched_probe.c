/* The native probe thread (streamcore._testing; see testing.h, "scheduling"): a C thread for
 * tests that need one Python did not create.
 *
 * The probe is a diagnostic, never on the audio path: it blocks on a condition variable and
 * does one request at a time (read its own scheduling, or fork and let the child read its).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "streamcore.h"
#include "testing.h"

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

_Static_assert(SC_SCHED_RESET_ON_FORK == SCHED_RESET_ON_FORK, "flag value differs from the kernel's");

enum probe_request { PROBE_IDLE, PROBE_READ, PROBE_FORK_READ, PROBE_STOP };

struct sc_probe_thread {
    pthread_t thread;
    pthread_mutex_t serial;  /* one request at a time, whoever asks */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int64_t tid;             /* set by the probe before it signals it started */
    enum probe_request request;
    int done;                /* the probe answered the current request */
    int status;              /* 0 or -errno for the current request */
    sc_sched_info info;
};

/* Read the calling thread's own scheduling. */
static int read_self(sc_sched_info *out)
{
    int policy = sched_getscheduler(0);
    if (policy < 0)
        return -errno;
    struct sched_param param;
    if (sched_getparam(0, &param) < 0)
        return -errno;
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0); /* PRIO_PROCESS, 0 = this thread on Linux */
    if (nice == -1 && errno != 0)
        return -errno;
    out->policy = policy & ~SCHED_RESET_ON_FORK;
    out->reset_on_fork = (policy & SCHED_RESET_ON_FORK) != 0;
    out->priority = param.sched_priority;
    out->nice = nice;
    return 0;
}

/* Fork; the child reads its scheduling, writes it into a pipe and exits. */
static int fork_read(sc_sched_info *out)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    if (pid == 0) { /* the child: only async-signal-safe calls from here */
        sc_sched_info seen;
        memset(&seen, 0, sizeof seen);
        int rc = read_self(&seen);
        ssize_t n = rc == 0 ? write(fds[1], &seen, sizeof seen) : -1;
        _exit(n == (ssize_t)sizeof seen ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got;
    do
        got = read(fds[0], out, sizeof *out);
    while (got < 0 && errno == EINTR);
    int rc = got == (ssize_t)sizeof *out ? 0 : (got < 0 ? -errno : -EIO);
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return rc;
}

static void *probe_main(void *arg)
{
    struct sc_probe_thread *probe = arg;
    pthread_mutex_lock(&probe->lock);
    probe->tid = (int64_t)syscall(SYS_gettid);
    pthread_cond_broadcast(&probe->changed);
    for (;;) {
        while (probe->request == PROBE_IDLE || probe->done)
            pthread_cond_wait(&probe->changed, &probe->lock);
        if (probe->request == PROBE_STOP)
            break;
        enum probe_request request = probe->request;
        sc_sched_info info;
        memset(&info, 0, sizeof info);
        pthread_mutex_unlock(&probe->lock);
        int status = request == PROBE_READ ? read_self(&info) : fork_read(&info);
        pthread_mutex_lock(&probe->lock);
        probe->info = info;
        probe->status = status;
        probe->done = 1;
        pthread_cond_broadcast(&probe->changed);
    }
    pthread_mutex_unlock(&probe->lock);
    return NULL;
}

int sc_probe_thread_start(sc_probe_thread **out)
{
    if (out == NULL)
        return -EINVAL;
    struct sc_probe_thread *probe = calloc(1, sizeof *probe);
    if (probe == NULL)
        return -ENOMEM;
    pthread_mutex_init(&probe->serial, NULL);
    pthread_mutex_init(&probe->lock, NULL);
    pthread_cond_init(&probe->changed, NULL);
    int rc = pthread_create(&probe->thread, NULL, probe_main, probe);
    if (rc != 0) {
        pthread_cond_destroy(&probe->changed);
        pthread_mutex_destroy(&probe->lock);
        pthread_mutex_destroy(&probe->serial);
        free(probe);
        return -rc;
    }
    pthread_mutex_lock(&probe->lock);
    while (probe->tid == 0)
        pthread_cond_wait(&probe->changed, &probe->lock);
    pthread_mutex_unlock(&probe->lock);
    *out = probe;
    return 0;
}

int64_t sc_probe_thread_tid(sc_probe_thread *probe)
{
    return probe == NULL ? -EINVAL : probe->tid;
}

static int ask(struct sc_probe_thread *probe, enum probe_request request, sc_sched_info *out)
{
    if (probe == NULL || out == NULL)
        return -EINVAL;
    pthread_mutex_lock(&probe->serial);
    pthread_mutex_lock(&probe->lock);
    probe->request = request;
    probe->done = 0;
    pthread_cond_broadcast(&probe->changed);
    while (!probe->done)
        pthread_cond_wait(&probe->changed, &probe->lock);
    *out = probe->info;
    int status = probe->status;
    probe->request = PROBE_IDLE;
    pthread_mutex_unlock(&probe->lock);
    pthread_mutex_unlock(&probe->serial);
    return status;
}

int sc_probe_thread_read(sc_probe_thread *probe, sc_sched_info *out)
{
    return ask(probe, PROBE_READ, out);
}

int sc_probe_thread_fork_read(sc_probe_thread *probe, sc_sched_info *out)
{
    return ask(probe, PROBE_FORK_READ, out);
}

void sc_probe_thread_stop(sc_probe_thread *probe)
{
    if (probe == NULL)
        return;
    pthread_mutex_lock(&probe->serial);
    pthread_mutex_lock(&probe->lock);
    probe->request = PROBE_STOP;
    probe->done = 0;
    pthread_cond_broadcast(&probe->changed);
    pthread_mutex_unlock(&probe->lock);
    pthread_join(probe->thread, NULL);
    pthread_mutex_unlock(&probe->serial);
    pthread_cond_destroy(&probe->changed);
    pthread_mutex_destroy(&probe->lock);
    pthread_mutex_destroy(&probe->serial);
    free(probe);
}
