"""What a sound server says about itself, asked directly: PortAudio does not tell.

PortAudio's JACK host calls a stream back in bursts when the stream's buffer is smaller than
the server's period: at each JACK cycle the whole period is taken at once.  An output ring
that holds less than a server period plus one of the engine's periods underruns at every
cycle (a 128 x 2 engine on a 1024-frame server underran in 7 of 7 runs).  The period is
libjack's ``jack_get_buffer_size`` (JACK2, and PipeWire's quantum through pipewire-jack),
read by a short-lived client that never starts a server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["jack_period"]

_JACK_NO_START_SERVER = 0x01


def jack_period(server: str | None = None) -> int | None:
    """The running JACK server's period in frames (``server``: its name; None: the default,
    ``$JACK_DEFAULT_SERVER``), or None when there is no libjack or no server answers.

    Notes
    -----
    Any thread; opens and closes a JACK client (a few milliseconds), never starts a server.
    """
    name = ctypes.util.find_library("jack")
    if name is None:
        return None
    try:
        jack = ctypes.CDLL(name)
    except OSError:
        return None
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_char_p]
    jack.jack_get_buffer_size.restype = ctypes.c_uint32
    jack.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
    jack.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    options = _JACK_NO_START_SERVER | (0x04 if server else 0)  # JackServerName
    label = f"streamcore-probe-{os.getpid()}".encode()
    client = jack.jack_client_open(label, options, ctypes.byref(status),
                                   server.encode() if server else None)
    if not client:
        return None
    try:
        period = int(jack.jack_get_buffer_size(client))
    finally:
        jack.jack_client_close(client)
    return period or None
