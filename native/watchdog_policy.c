/*
 * watchdog_policy.c: the watchdog's decision, a pure function of what it sees (no thread, no
 * clock, no syscall): the watchdog thread calls it every look, and tests call it on data
 * (streamcore.watchdog.decide).
 */
#include <stddef.h>
#include <stdint.h>

#include "streamcore.h"

uint32_t sc_watchdog_decide(const sc_engine_config *c, sc_watchdog_state *st,
                            const sc_watchdog_input *in)
{
    /* SIGXCPU first: the kernel is counting down to SIGKILL. */
    if (in->sigxcpu != st->sigxcpu_seen) {
        st->sigxcpu_seen = in->sigxcpu;
        st->mixer_demoted = 1;
        return SC_DEMOTE_RTTIME;
    }
    /* The canary: the whole machine (or our CPU) is starved by realtime threads. */
    if (!st->canary_tripped && in->canary_ns > 0 && in->now_ns - in->canary_ns > c->canary_ns) {
        st->canary_tripped = 1;
        st->mixer_demoted = 1;
        return SC_DEMOTE_CANARY;
    }
    const int hard_done = in->hard_overruns != st->hard_overruns_seen;
    st->hard_overruns_seen = in->hard_overruns;
    if (st->mixer_demoted)
        return SC_DEMOTE_NONE;
    /* A mixer that is not realtime (not promoted yet, or demoted by someone else) cannot
     * starve anyone: a long cycle is it being preempted.  Nothing to demote; the rules below
     * apply again once it is realtime. */
    if (!in->mixer_realtime)
        return SC_DEMOTE_NONE;
    /* A cycle still running past the hard limit (a busy loop never ends on its own); a cycle
     * that renders k periods (a pipe's reader took k at once) has k periods' limit. */
    const int64_t limit = c->hard_limit_ns * (in->cycle_periods > 1 ? in->cycle_periods : 1);
    if (hard_done || (in->busy_since_ns > 0 && in->now_ns - in->busy_since_ns > limit)) {
        st->mixer_demoted = 1;
        return SC_DEMOTE_HARD_LIMIT;
    }
    if (in->streak >= c->overruns_in_row) {
        st->mixer_demoted = 1;
        return SC_DEMOTE_OVERRUNS;
    }
    return SC_DEMOTE_NONE;
}
