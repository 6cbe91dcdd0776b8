/*
 * jack_host.c: what a JACK server (JACK2, or PipeWire through pipewire-jack) tells its clients,
 * heard by a client of our own.
 *
 * PortAudio's JACK host keeps its JACK client to itself: it folds the server's xruns into the
 * stream callback's status flags (once per callback, not per server cycle), never says when
 * the server's period changes, and reports a latency that under pipewire-jack was 2**32
 * frames.  A second, portless client without a process callback is not part of the server's
 * processing graph; once activated it receives the same notifications as every client.  Its
 * callbacks run on libjack's notification thread and only store atomics.
 *
 * libjack is dlopen()ed, not linked: the core must load on a machine without JACK, and the
 * library that answers is whichever the dynamic linker finds (PipeWire's own libjack when
 * LD_LIBRARY_PATH points at it, as pw-jack does).  The declarations below follow jack/jack.h's
 * ABI, spelled out because only the library is installed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "streamcore.h"

typedef struct jack_client jack_client_t;
typedef struct jack_port jack_port_t;
typedef uint32_t jack_nframes_t;
typedef struct {
    jack_nframes_t min, max;
} jack_latency_range_t;

enum { JACK_NO_START_SERVER = 0x01, JACK_SERVER_NAME = 0x04 }; /* jack_options_t */
enum { JACK_PORT_IS_OUTPUT = 0x2 };                            /* JackPortFlags */
enum { JACK_PLAYBACK_LATENCY = 1 };                            /* jack_latency_callback_mode_t */

struct jack_calls {
    jack_client_t *(*client_open)(const char *, int, int *, ...);
    int (*client_close)(jack_client_t *);
    int (*activate)(jack_client_t *);
    int (*deactivate)(jack_client_t *);
    int (*set_xrun_callback)(jack_client_t *, int (*)(void *), void *);
    int (*set_buffer_size_callback)(jack_client_t *, int (*)(jack_nframes_t, void *), void *);
    void (*on_info_shutdown)(jack_client_t *, void (*)(int, const char *, void *), void *);
    jack_nframes_t (*get_buffer_size)(jack_client_t *);
    jack_nframes_t (*get_sample_rate)(jack_client_t *);
    const char **(*get_ports)(jack_client_t *, const char *, const char *, unsigned long);
    jack_port_t *(*port_by_name)(jack_client_t *, const char *);
    void (*port_get_latency_range)(jack_port_t *, int, jack_latency_range_t *);
    void (*free)(void *);
    const char *(*get_version_string)(void); /* optional */
};

struct sc_jack_watch {
    void *library;
    struct jack_calls jack;
    jack_client_t *client;
    _Atomic uint64_t xruns;
    _Atomic uint32_t period;
    _Atomic uint64_t period_changes;
    _Atomic int32_t shutdown;
    uint32_t samplerate;
    /* sc_jack_watch_follow: the engine whose fill follows the period (NULL: none). */
    struct sc_engine *_Atomic engine;
    uint32_t blocksize, base_fill, taken_min;
};

/* ---- notifications (libjack's thread: atomics only) ---------------------------------------- */

static int on_xrun(void *arg)
{
    sc_jack_watch *w = arg;
    atomic_fetch_add_explicit(&w->xruns, 1, memory_order_relaxed);
    return 0;
}

static int on_buffer_size(jack_nframes_t frames, void *arg)
{
    sc_jack_watch *w = arg;
    uint32_t old = atomic_exchange_explicit(&w->period, frames, memory_order_relaxed);
    if (old != 0 && old != frames)
        atomic_fetch_add_explicit(&w->period_changes, 1, memory_order_relaxed);
    struct sc_engine *e = atomic_load_explicit(&w->engine, memory_order_acquire);
    if (e != NULL) {
        /* The server calls this before the first cycle of the new period: with a server period
         * plus a period rendered ahead by then, the first large burst finds it all. */
        const uint32_t n = w->blocksize;
        const uint32_t taken = frames > w->taken_min ? frames : w->taken_min;
        uint32_t fill = ((taken + n - 1) / n + 1) * n;
        if (fill < w->base_fill)
            fill = w->base_fill;
        (void)sc_engine_set_fill(e, fill); /* -ENOSPC: the sink's monitor fails the run */
    }
    return 0;
}

static void on_shutdown(int status, const char *reason, void *arg)
{
    (void)status;
    (void)reason;
    sc_jack_watch *w = arg;
    atomic_store_explicit(&w->shutdown, 1, memory_order_release);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static int resolve(sc_jack_watch *w)
{
    struct jack_calls *j = &w->jack;
    void *lib = w->library;
#define CALL(field, name)                                                                       \
    do {                                                                                        \
        *(void **)(&j->field) = dlsym(lib, name);                                               \
        if (j->field == NULL)                                                                   \
            return -ENOSYS;                                                                     \
    } while (0)
    CALL(client_open, "jack_client_open");
    CALL(client_close, "jack_client_close");
    CALL(activate, "jack_activate");
    CALL(deactivate, "jack_deactivate");
    CALL(set_xrun_callback, "jack_set_xrun_callback");
    CALL(set_buffer_size_callback, "jack_set_buffer_size_callback");
    CALL(on_info_shutdown, "jack_on_info_shutdown");
    CALL(get_buffer_size, "jack_get_buffer_size");
    CALL(get_sample_rate, "jack_get_sample_rate");
    CALL(get_ports, "jack_get_ports");
    CALL(port_by_name, "jack_port_by_name");
    CALL(port_get_latency_range, "jack_port_get_latency_range");
    CALL(free, "jack_free");
#undef CALL
    *(void **)(&j->get_version_string) = dlsym(lib, "jack_get_version_string");
    return 0;
}

int sc_jack_watch_open(sc_jack_watch **out, const char *server, const char *client_name)
{
    *out = NULL;
    if (client_name == NULL || client_name[0] == '\0')
        return -EINVAL;
    sc_jack_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->library = dlopen("libjack.so.0", RTLD_NOW | RTLD_LOCAL);
    if (w->library == NULL) {
        free(w);
        return -ENOENT;
    }
    int err = resolve(w);
    if (err == 0) {
        int status = 0;
        int options = JACK_NO_START_SERVER | (server != NULL ? JACK_SERVER_NAME : 0);
        w->client = server != NULL ? w->jack.client_open(client_name, options, &status, server)
                                   : w->jack.client_open(client_name, options, &status);
        if (w->client == NULL)
            err = -ECONNREFUSED;
    }
    if (err == 0) {
        atomic_store_explicit(&w->period, w->jack.get_buffer_size(w->client),
                              memory_order_relaxed);
        w->samplerate = w->jack.get_sample_rate(w->client);
        if (w->jack.set_xrun_callback(w->client, on_xrun, w) != 0 ||
            w->jack.set_buffer_size_callback(w->client, on_buffer_size, w) != 0)
            err = -ENOSYS;
        else {
            w->jack.on_info_shutdown(w->client, on_shutdown, w);
            if (w->jack.activate(w->client) != 0)
                err = -ECONNREFUSED;
        }
    }
    if (err != 0) {
        if (w->client != NULL)
            w->jack.client_close(w->client);
        dlclose(w->library);
        free(w);
        return err;
    }
    *out = w;
    return 0;
}

void sc_jack_watch_follow(sc_jack_watch *w, struct sc_engine *engine, uint32_t blocksize,
                          uint32_t base_fill, uint32_t taken_min)
{
    w->blocksize = blocksize;
    w->base_fill = base_fill;
    w->taken_min = taken_min;
    atomic_store_explicit(&w->engine, blocksize > 0 ? engine : NULL, memory_order_release);
}

void sc_jack_watch_close(sc_jack_watch *w)
{
    if (w == NULL)
        return;
    atomic_store_explicit(&w->engine, NULL, memory_order_release);
    /* After a shutdown the client is dead: libjack's own close of it may wait on a server that
     * is gone, so it is left (a few hundred bytes and the library stay). */
    if (!atomic_load_explicit(&w->shutdown, memory_order_acquire)) {
        w->jack.deactivate(w->client);
        w->jack.client_close(w->client);
        dlclose(w->library); /* our reference; PortAudio holds its own */
        free(w);
    }
}

void sc_jack_watch_get_stats(const sc_jack_watch *cw, sc_jack_watch_stats *out)
{
    sc_jack_watch *w = (sc_jack_watch *)cw;
    memset(out, 0, sizeof(*out));
    out->xruns = atomic_load_explicit(&w->xruns, memory_order_relaxed);
    out->period = atomic_load_explicit(&w->period, memory_order_relaxed);
    out->samplerate = w->samplerate;
    out->period_changes = atomic_load_explicit(&w->period_changes, memory_order_relaxed);
    out->shutdown = atomic_load_explicit(&w->shutdown, memory_order_acquire);
}

int sc_jack_watch_playback_latency(sc_jack_watch *w, const char *port_regex, uint32_t *min,
                                   uint32_t *max)
{
    *min = *max = 0;
    if (atomic_load_explicit(&w->shutdown, memory_order_acquire))
        return -ENOTCONN;
    const char **names = w->jack.get_ports(w->client, port_regex, NULL, JACK_PORT_IS_OUTPUT);
    if (names == NULL)
        return 0;
    int found = 0;
    for (const char **name = names; *name != NULL; name++) {
        jack_port_t *port = w->jack.port_by_name(w->client, *name);
        if (port == NULL)
            continue;
        jack_latency_range_t range = {0, 0};
        w->jack.port_get_latency_range(port, JACK_PLAYBACK_LATENCY, &range);
        if (found == 0 || range.min < *min)
            *min = range.min;
        if (range.max > *max)
            *max = range.max;
        found++;
    }
    w->jack.free(names);
    return found;
}

const char *sc_jack_watch_version(const sc_jack_watch *w)
{
    if (w->jack.get_version_string == NULL)
        return "";
    const char *v = w->jack.get_version_string();
    return v != NULL ? v : "";
}
