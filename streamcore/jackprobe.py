"""What a JACK server says about itself, asked by a short-lived client: PortAudio does not tell.

Native-free (libjack through ctypes), so that ``streamcore doctor`` asks with it too, even
without the native core.  Every probe is bounded by :data:`ANSWER_TIMEOUT` and never starts a
server.

PortAudio's JACK host calls a stream back in bursts when the stream's buffer is smaller than
the server's period: at each JACK cycle the whole period is taken at once.  An output ring
that holds less than a server period plus one of the engine's periods underruns at every
cycle (a 128 x 2 engine on a 1024-frame server underran in 7 of 7 runs).  The period is
libjack's ``jack_get_buffer_size`` (JACK2, and PipeWire's quantum through pipewire-jack),
read by a short-lived client that never starts a server.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable
from typing import Any, cast

__all__ = ["ANSWER_TIMEOUT", "bounded_call", "jack_client_present", "jack_period",
           "jack_server_facts", "jack_version", "libjack_facts"]

_JACK_NO_START_SERVER = 0x01


#: Seconds a JACK server may take to answer a probe: libjack waits without limit on a server
#: that accepts connections but does not run (a SIGSTOPped jackd: over 60 s, measured).
ANSWER_TIMEOUT = 2.0


def bounded_call(call: Callable[[], Any], timeout: float = ANSWER_TIMEOUT,
             abandon: Callable[[Any], None] | None = None) -> tuple[bool, Any]:
    """``(True, call())`` when it returns within ``timeout`` seconds, else ``(False, None)``;
    the call goes on in a daemon thread, and what it returns late goes to ``abandon``."""
    import threading

    result: list[Any] = []
    lock = threading.Lock()
    gave_up = [False]

    def run() -> None:
        value = call()
        with lock:
            if not gave_up[0]:
                result.append(value)
                return
        if abandon is not None:
            abandon(value)

    thread = threading.Thread(target=run, name="streamcore-jack-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    with lock:
        if result:
            return True, result[0]
        gave_up[0] = True
        return False, None


_JACK_LIBRARY = "libjack.so.0"  # the soname JACK clients (PortAudio's JACK host) link against


def _library() -> ctypes.CDLL | None:
    """libjack as a JACK client of this process gets it (JACK2's, or PipeWire's pipewire-jack
    when LD_LIBRARY_PATH puts that first, as `pw-jack` does), or None."""
    try:
        return ctypes.CDLL(_JACK_LIBRARY)
    except OSError:
        return None


def _ask(action: Callable[[Any, Any], Any], server: str | None = None,
         timeout: float = ANSWER_TIMEOUT) -> tuple[Any, str | None]:
    """Open a short-lived JACK client (never starting a server), run ``action(libjack,
    client)`` and close it: ``(what it returned, None)``, or ``(None, why not)`` when there is
    no libjack, no client opens, or none opens within ``timeout`` seconds (a server that
    accepts connections but hangs: the attempt is left behind in a daemon thread)."""
    answered, outcome = bounded_call(lambda: _client_call(action, server), timeout)
    if not answered:
        return None, (f"it accepted a connection, but no JACK client opened within "
                      f"{timeout:g} s (hung?)")
    return cast("tuple[Any, str | None]", outcome)


def _with_client(action: Callable[[Any, Any], Any], server: str | None = None) -> Any:
    """What ``action`` returned (see :func:`_ask`), or None when it could not run."""
    return _ask(action, server)[0]


def _client_call(action: Callable[[Any, Any], Any],
                 server: str | None) -> tuple[Any, str | None]:
    jack = _library()
    if jack is None:
        return None, f"no {_JACK_LIBRARY}"
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_char_p]
    jack.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    # No server name: libjack reads $JACK_DEFAULT_SERVER itself (pipewire-jack would take a
    # name as a PipeWire remote's).
    options = _JACK_NO_START_SERVER | (0x04 if server else 0)  # JackServerName
    label = f"streamcore-probe-{os.getpid()}".encode()
    client = jack.jack_client_open(label, options, ctypes.byref(status),
                                   server.encode() if server else None)
    if not client:
        return None, f"jack_client_open failed (status 0x{status.value:x})"
    try:
        return action(jack, client), None
    finally:
        jack.jack_client_close(client)


def jack_period(server: str | None = None) -> int | None:
    """The running JACK server's period in frames (``server``: its name; None: the default,
    ``$JACK_DEFAULT_SERVER``), or None when there is no libjack or no server answers.

    Notes
    -----
    Any thread; opens and closes a JACK client (a few milliseconds), never starts a server.
    """
    def period(jack: Any, client: Any) -> int | None:
        jack.jack_get_buffer_size.restype = ctypes.c_uint32
        jack.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
        return int(jack.jack_get_buffer_size(client)) or None

    return cast("int | None", _with_client(period, server))


def jack_server_facts(timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """The default server's ``period`` and ``samplerate`` (frames, Hz), or ``error`` (why no
    client of it opened), from one short-lived client.

    Notes
    -----
    Any thread; waits at most ``timeout`` seconds, never starts a server.
    """
    def ask(jack: Any, client: Any) -> tuple[int | None, int | None]:
        jack.jack_get_buffer_size.restype = ctypes.c_uint32
        jack.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
        jack.jack_get_sample_rate.restype = ctypes.c_uint32
        jack.jack_get_sample_rate.argtypes = [ctypes.c_void_p]
        return (int(jack.jack_get_buffer_size(client)) or None,
                int(jack.jack_get_sample_rate(client)) or None)

    answer, error = _ask(ask, None, timeout)
    period, samplerate = answer if answer is not None else (None, None)
    return {"period": period, "samplerate": samplerate, "error": error}


def _library_path() -> str | None:
    """The file of the libjack mapped into this process (/proc/self/maps), or None."""
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split(maxsplit=5)[-1].strip()
            if os.path.basename(path).startswith("libjack.so"):
                return path
    return None


def libjack_facts() -> dict[str, Any]:
    """Which libjack a JACK client of this process gets: ``path`` (the file mapped),
    ``version`` (its version string, e.g. '1.9.21' for JACK2, '3.0.0.0 (using PipeWire
    0.3.65)' for pipewire-jack; None when it has none), ``flavour`` ('jack2' | 'pipewire' |
    None) and ``error`` (no libjack).

    Notes
    -----
    Any thread; loads the library (it stays loaded), starts no client, asks no server.
    """
    facts: dict[str, Any] = {"path": None, "version": None, "flavour": None, "error": None}
    try:
        jack = ctypes.CDLL(_JACK_LIBRARY)
    except OSError as e:
        facts["error"] = f"no libjack: {e}"
        return facts
    call = getattr(jack, "jack_get_version_string", None)  # absent in old JACKs
    if call is not None:
        call.restype = ctypes.c_char_p
        call.argtypes = []
        value = call()
        facts["version"] = value.decode(errors="replace") if value else None
    facts["path"] = _library_path()
    # pipewire-jack lives in .../pipewire-0.3/jack/; JACK1 would count as JACK2 here.
    pipewire = "PipeWire" in (facts["version"] or "") or "pipewire" in (facts["path"] or "")
    facts["flavour"] = "pipewire" if pipewire else "jack2"
    return facts


def jack_version() -> str | None:
    """libjack's version string (see :func:`libjack_facts`), or None.

    Notes
    -----
    Any thread; no client, no server asked.
    """
    return cast("str | None", libjack_facts()["version"])


def jack_client_present(name: str) -> bool | None:
    """Whether the default JACK server has a client called ``name``; None when no server
    answers (or there is no libjack).

    Notes
    -----
    Any thread; opens and closes a JACK client, never starts a server.
    """
    def present(jack: Any, client: Any) -> bool:
        jack.jack_get_uuid_for_client_name.restype = ctypes.c_void_p
        jack.jack_get_uuid_for_client_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        jack.jack_free.argtypes = [ctypes.c_void_p]
        uuid = jack.jack_get_uuid_for_client_name(client, name.encode())
        if uuid:
            jack.jack_free(uuid)
        return bool(uuid)

    return cast("bool | None", _with_client(present))
