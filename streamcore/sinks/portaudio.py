"""The PortAudio library of this process: loaded once, replaced once its audio server died.

Why this module exists: an audio server dying leaves PortAudio unusable in the process that
played through it (measured with libportaudio2 19.6 and jackd2 1.9).  Pa_StopStream,
Pa_AbortStream and Pa_CloseStream on the dead stream block, and Pa_Terminate aborts the
process (an assertion in pa_jack.c's Terminate, whose own JACK client cannot be closed).  So:

- a stream whose server died is never called again: it is *parked* (kept referenced, never
  closed, its finalizer never runs) and sounddevice's exit handler is unregistered, so the
  process can still exit normally (:func:`park`);
- :func:`usable` turns False, and the next device sink loads a private copy of the library
  file (:func:`load_fresh`): dlopen() of the same path would return the same broken
  instance, a copy under another path is a new instance with fresh static state and its own
  JACK client.  A new engine then plays once the server is back, without a new process.
  The broken library stays loaded (never terminated) with its parked streams; other
  sounddevice streams that were open when the server died stay unusable.

Everything that knows about PortAudio's library lifetime is here; the device sink
(streamcore/sinks/device.py) only asks these functions.  Callers serialise on the device
sink's lock; nothing here runs on an audio thread.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import sys
import tempfile
from typing import Any

from streamcore.errors import SinkError

__all__ = ["jack_client_name", "load_fresh", "park", "running", "sounddevice", "usable"]

# Streams whose audio server died since the last fresh library: non-empty means PortAudio
# must not be terminated (nor used) in this process.
_PARKED_STREAMS: list[Any] = []
# Every parked stream and every broken library, referenced for the process's life (their
# finalizers would call into the broken library).
_BROKEN_PARKED: list[Any] = []
_BROKEN_LIBRARIES: list[Any] = []
# The file the current library was loaded from, when it is a private copy (kept until exit:
# ctypes must dlopen() the same path to reach the same instance).
_copy_path: str | None = None


def sounddevice() -> Any:
    """The sounddevice module (imported on first use: importing it loads PortAudio)."""
    import sounddevice as sd

    global _guarded
    if not _guarded:
        _guard_exit()
        _guarded = True
    return sd


_guarded = False


def _guard_exit() -> None:
    """Run :func:`_skip_terminate_without_server` at exit before sounddevice's own handler
    (atexit runs the last registered first)."""
    atexit.unregister(_skip_terminate_without_server)
    atexit.register(_skip_terminate_without_server)


def _skip_terminate_without_server() -> None:
    """At exit: sounddevice's handler calls Pa_Terminate, which closes PortAudio's JACK
    client and aborts the process (an assertion in pa_jack.c) when that client's server is
    gone, even with no stream open (a server that died or was stopped after the last
    engine closed).  Then the handler is skipped: the process is ending, nothing is left
    to close cleanly, and the server side already lost the client."""
    sd = sys.modules.get("sounddevice")
    if sd is None or not sd._initialized:
        return
    try:
        jack = any("JACK" in api["name"] for api in sd.query_hostapis())
    except Exception:  # at exit: never raise
        return
    if not jack:
        return
    from streamcore.jackprobe import jack_client_present

    name = jack_client_name()
    if name is not None and not jack_client_present(name):
        atexit.unregister(sd._exit_handler)


def usable() -> bool:
    """False once an audio server died under a stream in this process, until
    :func:`load_fresh` replaced the library."""
    return not _PARKED_STREAMS


def running() -> bool:
    """False once PortAudio was terminated in this process (sounddevice's exit handler runs
    before streamcore's engines are closed at exit): its streams are closed by then, and
    calling them again would touch freed memory."""
    return bool(sounddevice()._initialized)


def _library_path() -> str:
    """The file of the PortAudio library in use (a private copy, or from /proc/self/maps)."""
    if _copy_path is not None:
        return _copy_path
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            path = fields[-1] if len(fields) >= 6 else ""
            if "libportaudio" in os.path.basename(path):
                return path
    raise SinkError("PortAudio is loaded, but its file is not in /proc/self/maps")


def park(stream: Any) -> None:
    """Keep ``stream``, whose server died, referenced and never call it again; PortAudio
    must not be terminated at exit any more."""
    sd = sounddevice()
    _PARKED_STREAMS.append(stream)
    _BROKEN_PARKED.append(stream)
    atexit.unregister(sd._exit_handler)  # Pa_Terminate would abort the process


def load_fresh() -> None:
    """Replace sounddevice's broken PortAudio with a private copy of the same library file.

    Raises
    ------
    OSError
        The copy could not be made or loaded.
    SinkError
        The library's file could not be found.
    """
    global _copy_path
    sd = sounddevice()
    source = _library_path()
    folder = tempfile.mkdtemp(prefix="streamcore-portaudio-")
    copy = os.path.join(folder, os.path.basename(source))
    shutil.copyfile(source, copy)
    try:
        fresh = sd._ffi.dlopen(copy)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    atexit.register(shutil.rmtree, folder, True)
    _BROKEN_LIBRARIES.append(sd._lib)
    sd._lib = fresh
    sd._last_callback = None  # a Python-callback stream of the old library: not ours to stop
    sd._initialized = 0
    sd._initialize()
    _copy_path = copy
    atexit.register(sd._exit_handler)  # the fresh library terminates normally at exit
    _guard_exit()  # ...unless its server is gone by then: checked before that handler
    _PARKED_STREAMS.clear()  # still referenced through _BROKEN_PARKED


def jack_client_name() -> str | None:
    """The name of PortAudio's own JACK client in this process (``PaJack_GetClientName``),
    whose ports are the device sink's stream; None without a JACK host API or a library
    that has the call."""
    try:
        library = ctypes.CDLL(_library_path())  # the same path: the same loaded instance
        call = library.PaJack_GetClientName
    except (OSError, AttributeError, SinkError):
        return None
    name = ctypes.c_char_p()
    call.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    call.restype = ctypes.c_int
    if call(ctypes.byref(name)) != 0 or not name.value:
        return None
    return name.value.decode(errors="replace")
