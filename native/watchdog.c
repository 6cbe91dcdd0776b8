/*
 * watchdog.c: the watchdog's threads and the SIGXCPU handler; what they decide is
 * watchdog_policy.c (a pure function, tested on data).
 */
#define _GNU_SOURCE
#include "engine_internal.h"

/*
 * The watchdog thread (realtime, above the mixer: Python promotes it by its tid) looks every
 * watchdog_interval_ns at what the mixer and the canary published and acts on
 * sc_watchdog_decide.  The canary thread stays SCHED_OTHER and cheeps (stores the time)
 * every few ms.  A SIGXCPU handler (RLIMIT_RTTIME's soft limit) demotes at once and leaves
 * the event to the watchdog.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* The thread's policy without SCHED_RESET_ON_FORK, or -errno. */
static int policy_of(int64_t tid)
{
    if (tid <= 0)
        return -ESRCH;
    int policy = sched_getscheduler((pid_t)tid);
    return policy < 0 ? -errno : (policy & ~SCHED_RESET_ON_FORK);
}

static int demote_tid(int64_t tid, int32_t *policy_before)
{
    if (tid <= 0)
        return -ESRCH;
    if (policy_before)
        *policy_before = policy_of(tid);
    struct sched_param p = {0};
    if (sched_setscheduler((pid_t)tid, SCHED_OTHER | SCHED_RESET_ON_FORK, &p) != 0)
        return -errno;
    return 0;
}

/* ---- SIGXCPU: every engine with a watchdog is on one list; the handler demotes their mixers.
 * Writers (register, unregister: control threads) take a mutex; the handler only reads the
 * list, lock-free, and counts itself in `in_handler` so that unregister can wait until no
 * handler may still hold the engine it unlinked (its memory is freed right after).  The
 * process's previous SIGXCPU action is installed back when the last engine leaves, and a
 * previous handler function is called after ours (the chain stays whole). */
static _Atomic(sc_engine *) registry_head;
static _Atomic int in_handler;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER; /* not RT: start/stop only */
static int registered;
static struct sigaction previous_action;

static void on_sigxcpu(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    atomic_fetch_add_explicit(&in_handler, 1, memory_order_seq_cst);
    for (sc_engine *e = atomic_load_explicit(&registry_head, memory_order_seq_cst); e != NULL;
         e = atomic_load_explicit(&e->registry_next, memory_order_acquire)) {
        /* async-signal-safe: an atomic add and the sched_setscheduler syscall */
        atomic_fetch_add_explicit(&e->sigxcpu, 1, memory_order_relaxed);
        demote_tid(sc_rt_thread_tid(&e->mixer), NULL);
    }
    atomic_fetch_sub_explicit(&in_handler, 1, memory_order_seq_cst);
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction)
            previous_action.sa_sigaction(sig, info, uctx);
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(sig);
    }
    errno = saved;
}

static void watchdog_register(sc_engine *e)
{
    pthread_mutex_lock(&registry_lock);
    if (registered++ == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigxcpu;
        sa.sa_flags = SA_RESTART | SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGXCPU, &sa, &previous_action);
    }
    atomic_store_explicit(&e->registry_next, atomic_load_explicit(&registry_head,
                                                                  memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&registry_head, e, memory_order_seq_cst);
    e->registered = 1;
    pthread_mutex_unlock(&registry_lock);
}

static void watchdog_unregister(sc_engine *e)
{
    pthread_mutex_lock(&registry_lock);
    if (!e->registered) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    _Atomic(sc_engine *) *link = &registry_head;
    for (sc_engine *it = atomic_load(link); it != NULL; it = atomic_load(link)) {
        if (it == e) {
            atomic_store_explicit(link, atomic_load(&e->registry_next), memory_order_seq_cst);
            break;
        }
        link = &it->registry_next;
    }
    e->registered = 0;
    if (--registered == 0)
        sigaction(SIGXCPU, &previous_action, NULL);
    pthread_mutex_unlock(&registry_lock);
    /* A handler that started before the unlink may still be looking at e. */
    while (atomic_load_explicit(&in_handler, memory_order_seq_cst) != 0)
        sched_yield();
}

/* ---- the threads ---------------------------------------------------------------------- */
static void *canary_main(void *arg)
{
    sc_engine *e = arg;
    int64_t every = e->config.canary_ns / 10;
    if (every > 20000000)
        every = 20000000;
    while (atomic_load_explicit(&e->running, memory_order_acquire)) {
        atomic_store_explicit(&e->canary_ns, sc_now_ns(), memory_order_release);
        uint32_t word = atomic_load_explicit(&e->watchdog_wake, memory_order_acquire);
        if (!atomic_load_explicit(&e->running, memory_order_acquire))
            break;
        sc_futex_wait_until(&e->watchdog_wake, word, sc_now_ns() + every);
    }
    return NULL;
}

static void record_event(sc_engine *e, const sc_event *ev)
{
    int64_t i = sc_spsc_reserve(&e->events, SC_EVENT_SLOTS);
    if (i >= 0) {
        e->event_slots[i] = *ev;
        sc_spsc_publish(&e->events);
    }
    uint64_t one = 1;
    ssize_t ignored = write(e->event_fd, &one, sizeof one);
    (void)ignored;
}

static void act(sc_engine *e, uint32_t reason, const sc_watchdog_input *in)
{
    sc_event ev;
    memset(&ev, 0, sizeof ev);
    ev.time_ns = in->now_ns;
    ev.reason = reason;
    ev.tid = sc_rt_thread_tid(&e->mixer);
    ev.busy_ns = in->busy_since_ns ? in->now_ns - in->busy_since_ns : 0;
    ev.streak = in->streak;
    ev.canary_age_ns = in->now_ns - in->canary_ns;
    ev.cycle = sc_read(&e->cycles);
    ev.result = demote_tid(ev.tid, &ev.policy_before);
    ev.threads = ev.result == 0 ? 1 : 0;
    if (reason == SC_DEMOTE_CANARY) {
        /* Starvation: every realtime thread of the engine goes, the watchdog (this thread)
         * too; it keeps looking at normal priority until repromote() promotes both again. */
        if (demote_tid(sc_rt_thread_tid(&e->watchdog), NULL) == 0)
            ev.threads++;
    }
    uint32_t taints = SC_TAINT_WATCHDOG_DEMOTED;
    if (reason == SC_DEMOTE_RTTIME)
        taints |= SC_TAINT_RTTIME_SIGNAL;
    sc_taint(e, taints);
    atomic_store_explicit(&e->demoted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->demotions, 1, memory_order_relaxed);
    record_event(e, &ev);
}

/* The mixer was realtime at the last look and is not now, and not by our hand: rtkit's
 * canary (it demotes every thread it ever granted), an admin's chrt, a resume from suspend. */
static bool lost_to_someone_else(sc_engine *e, int policy)
{
    const bool is = policy == SCHED_FIFO || policy == SCHED_RR;
    if (is) {
        e->wd_state.loss_reported = 0; /* realtime again: the next loss is news */
        return false;
    }
    /* A grant since the last report is a new loss even if no look saw it realtime between */
    const uint32_t grant = atomic_load_explicit(&e->grants, memory_order_acquire) + 1;
    const int granted = atomic_load_explicit(&e->granted_policy, memory_order_acquire);
    return granted >= 0 && policy >= 0 && e->wd_state.loss_reported != grant &&
           !atomic_load_explicit(&e->demoted, memory_order_relaxed);
}

static void report_outside(sc_engine *e, const sc_watchdog_input *in, int policy)
{
    sc_event ev;
    memset(&ev, 0, sizeof ev);
    ev.time_ns = in->now_ns;
    ev.reason = SC_DEMOTE_OUTSIDE;
    ev.tid = sc_rt_thread_tid(&e->mixer);
    ev.policy_before = atomic_load_explicit(&e->granted_policy, memory_order_acquire);
    e->wd_state.loss_reported = atomic_load_explicit(&e->grants, memory_order_acquire) + 1;
    ev.result = policy; /* the policy it has now (not an errno: nothing was done) */
    ev.threads = 1;
    int own = policy_of(sc_rt_thread_tid(&e->watchdog));
    if (own >= 0 && own != SCHED_FIFO && own != SCHED_RR)
        ev.threads++; /* this thread lost it too (rtkit's canary takes every grant) */
    ev.canary_age_ns = in->now_ns - in->canary_ns;
    ev.cycle = sc_read(&e->cycles);
    sc_taint(e, SC_TAINT_REALTIME_LOST);
    atomic_fetch_add_explicit(&e->realtime_losses, 1, memory_order_relaxed);
    record_event(e, &ev);
}

static void *watchdog_main(void *arg)
{
    sc_engine *e = arg;
    prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0);
    int64_t interval = e->config.watchdog_interval_ns;
    int64_t next = sc_now_ns();
    if (e->config.clock == SC_CLOCK_TIMER) {
        /* Look between the mixer's wake-ups, never at them: the mixer wakes at start_ns +
         * k * period, and two realtime timers firing together make one wait for the other
         * (this thread runs above the mixer: the mixer would wake late every time).  So the
         * interval is rounded up to whole periods and every look falls half a period after
         * a mixer wake-up, when its cycle is long done. */
        const int64_t p = e->period_ns;
        interval = (interval + p - 1) / p * p;
        next = e->start_ns + ((next - e->start_ns) / p + 1) * p + p / 2 - interval;
    }
    for (;;) {
        next += interval;
        /* The wait ends at the deadline, or at once when stop bumps watchdog_wake: however
         * long the interval, stopping never waits for it. */
        uint32_t word = atomic_load_explicit(&e->watchdog_wake, memory_order_acquire);
        if (!atomic_load_explicit(&e->running, memory_order_acquire))
            break;
        while (sc_now_ns() < next && atomic_load_explicit(&e->running, memory_order_acquire)) {
            sc_futex_wait_until(&e->watchdog_wake, word, next);
            word = atomic_load_explicit(&e->watchdog_wake, memory_order_acquire);
        }
        if (!atomic_load_explicit(&e->running, memory_order_acquire))
            break;
        sc_watchdog_input in;
        in.now_ns = sc_now_ns();
        if (in.now_ns - next > interval) /* late ourselves: skip, keeping the phase */
            next += (in.now_ns - next) / interval * interval;
        if (atomic_exchange_explicit(&e->rearm_request, 0, memory_order_acq_rel)) {
            e->wd_state.mixer_demoted = 0;
            e->wd_state.canary_tripped = 0;
            atomic_store_explicit(&e->demoted, 0, memory_order_relaxed);
        }
        /* The policy first: a SIGXCPU demotion after this read is counted in sigxcpu below
         * (so it is not taken for someone else's), one before it too. */
        int policy = policy_of(sc_rt_thread_tid(&e->mixer));
        in.mixer_realtime = policy == SCHED_FIFO || policy == SCHED_RR;
        in.busy_since_ns = atomic_load_explicit(&e->busy_since_ns, memory_order_acquire);
        in.canary_ns = atomic_load_explicit(&e->canary_ns, memory_order_acquire);
        in.streak = atomic_load_explicit(&e->streak, memory_order_acquire);
        in.cycle_periods = atomic_load_explicit(&e->cycle_periods, memory_order_acquire);
        in.sigxcpu = sc_read(&e->sigxcpu);
        in.hard_overruns = sc_read(&e->hard_overruns);
        uint32_t reason = sc_watchdog_decide(&e->config, &e->wd_state, &in);
        if (reason != SC_DEMOTE_NONE)
            act(e, reason, &in);
        else if (lost_to_someone_else(e, policy))
            report_outside(e, &in, policy);
    }
    return NULL;
}

int sc_watchdog_start(sc_engine *e)
{
    memset(&e->wd_state, 0, sizeof e->wd_state);
    e->wd_state.sigxcpu_seen = sc_read(&e->sigxcpu);
    e->wd_state.hard_overruns_seen = sc_read(&e->hard_overruns);
    atomic_store_explicit(&e->canary_ns, sc_now_ns(), memory_order_release);
    int rc = sc_rt_thread_start(&e->canary, "sc-canary", canary_main, e, 0, 0);
    if (rc)
        return rc;
    rc = sc_rt_thread_start(&e->watchdog, "sc-watchdog", watchdog_main, e, 0, 0);
    if (rc)
        return rc;
    watchdog_register(e);
    return 0;
}

void sc_watchdog_stop(sc_engine *e)
{
    watchdog_unregister(e);
    sc_futex_bump_wake(&e->watchdog_wake); /* `running` is off: both threads leave at once */
    sc_rt_thread_join(&e->watchdog);
    sc_rt_thread_join(&e->canary);
}
