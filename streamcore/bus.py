"""A small blocking D-Bus client whose every step is bounded by one deadline.

jeepney's blocking connection says Hello with no time limit, so a bus daemon that accepts the
connection and then hangs would hang us.  Here connecting, authenticating, Hello and each call
share the caller's deadline: a missing bus, a missing service or a hung daemon costs at most
``timeout`` seconds.  jeepney does the protocol (messages, parsing, authentication); this
module only does the I/O, in the way jeepney's own docs recommend.
"""

from __future__ import annotations

import errno as _errno
import itertools
import os
import socket
import time
from typing import Any, cast

from jeepney import DBusAddress, HeaderFields, MessageType, Parser, Properties, message_bus
from jeepney.bus import get_bus
from jeepney.io.blocking import prep_socket
from jeepney.low_level import Message

from streamcore.errors import StreamcoreError

__all__ = ["BusConnection", "BusError", "session_bus_address", "system_bus_address"]

# D-Bus error names and the errno they mean, as PipeWire's module-rt maps them.
_ERRNO_OF = {
    "org.freedesktop.DBus.Error.ServiceUnknown": _errno.ENOENT,
    "org.freedesktop.DBus.Error.NameHasNoOwner": _errno.ENOENT,
    "org.freedesktop.DBus.Error.UnknownMethod": _errno.ENOSYS,
    "org.freedesktop.DBus.Error.UnknownProperty": _errno.ENOSYS,
    "org.freedesktop.DBus.Error.AccessDenied": _errno.EACCES,
    "org.freedesktop.DBus.Error.AuthFailed": _errno.EACCES,
    "org.freedesktop.DBus.Error.NoReply": _errno.ETIMEDOUT,
    "org.freedesktop.DBus.Error.Timeout": _errno.ETIMEDOUT,
    "org.freedesktop.DBus.Error.TimedOut": _errno.ETIMEDOUT,
    "org.freedesktop.DBus.Error.InvalidArgs": _errno.EINVAL,
    "org.freedesktop.DBus.Error.Failed": _errno.EIO,
    "org.freedesktop.portal.Error.NotAllowed": _errno.EACCES,
    "org.freedesktop.portal.Error.Failed": _errno.EIO,
}


class BusError(StreamcoreError, OSError):
    """A D-Bus step failed.  ``name`` is the D-Bus error name (or a streamcore one for
    failures before any reply: ``streamcore.NoBus``, ``streamcore.Timeout``)."""

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        code = _ERRNO_OF.get(name, _errno.EIO) if code is None else code
        super().__init__(code, message)
        self.name = name

    def __str__(self) -> str:
        return f"{self.args[1]} ({self.name})"


def system_bus_address() -> str:
    """The system bus address this process would use (honours DBUS_SYSTEM_BUS_ADDRESS)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/var/run/dbus/system_bus_socket"


def session_bus_address() -> str | None:
    """The session bus address, found the standard way: DBUS_SESSION_BUS_ADDRESS, else the
    socket ``$XDG_RUNTIME_DIR/bus`` when it exists (systemd's user bus); None: no session
    bus can be named."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


class BusConnection:
    """One connection to a bus (the system bus unless told otherwise); not thread-safe (one
    thread uses it at a time).

    Use as a context manager.  ``timeout`` bounds everything the connection does, from the
    connect in the constructor to the last call, in total.  ``session=True``: the session
    bus (:func:`session_bus_address`); ``address``: that bus instead.
    """

    _sock: socket.socket | None = None
    unique_name = ""  #: the name the bus gave this connection (Hello)

    def __init__(self, timeout: float = 2.0, *, session: bool = False,
                 address: str | None = None) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._serials = itertools.count(1)
        self._parser = Parser()
        self.kind = "session bus" if session else "system bus"
        if address is None:
            address = session_bus_address() if session else system_bus_address()
        if address is None:
            raise BusError("streamcore.NoBus", "DBUS_SESSION_BUS_ADDRESS is not set and "
                           "there is no $XDG_RUNTIME_DIR/bus", _errno.ENOENT)
        self.address = address
        try:
            self._sock = prep_socket(get_bus(address), timeout=self._remaining())
        except TimeoutError as e:
            raise BusError("streamcore.Timeout", f"the {self.kind} at {address} did not "
                           f"authenticate us within {timeout:g} s", _errno.ETIMEDOUT) from e
        except OSError as e:
            raise BusError("streamcore.NoBus", f"no {self.kind} at {address}: "
                           f"{e.strerror or e}", e.errno or _errno.ENOENT) from e
        except Exception as e:  # jeepney's AuthenticationError is a ValueError
            raise BusError("streamcore.NoBus", f"the {self.kind} at {address} refused us: {e}",
                           _errno.ECONNREFUSED) from e
        (self.unique_name,) = self.call(message_bus.Hello())

    def has_owner(self, name: str) -> bool:
        """Whether ``name`` is owned on this bus now (NameHasOwner: never starts a service).

        Returns
        -------
        bool
        """
        return bool(self.call(message_bus.NameHasOwner(name))[0])

    def own_pid(self) -> int | None:
        """The pid the bus reports for this connection (GetConnectionUnixProcessID): this
        process's pid as seen from outside any PID namespace it is in; None when the bus
        does not say.

        Returns
        -------
        int or None
        """
        try:
            (pid,) = self.call(message_bus.GetConnectionUnixProcessID(self.unique_name))
        except BusError:
            return None
        return int(pid)

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise BusError("streamcore.Timeout",
                           f"the {self.kind} did not answer within {self._timeout:g} s",
                           _errno.ETIMEDOUT)
        return left

    def call(self, message: Message) -> tuple[Any, ...]:
        """Send a method call and return the reply's body; a D-Bus error raises BusError."""
        if self._sock is None:
            raise BusError("streamcore.NoBus", "the bus connection is closed", _errno.EBADF)
        serial = next(self._serials)
        try:
            self._sock.settimeout(self._remaining())
            self._sock.sendall(message.serialise(serial=serial))
            while True:
                reply = self._parser.get_next_message()
                if reply is None:
                    self._sock.settimeout(self._remaining())
                    data = self._sock.recv(65536)
                    if not data:
                        raise BusError("streamcore.NoBus",
                                       f"the {self.kind} closed the connection",
                                       _errno.ECONNRESET)
                    self._parser.add_data(data)
                    continue
                if reply.header.fields.get(HeaderFields.reply_serial) != serial:
                    continue  # a signal or an unrelated message: not ours
                if reply.header.message_type == MessageType.error:
                    name = reply.header.fields.get(HeaderFields.error_name, "unknown")
                    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
                    raise BusError(name, text or name)
                return cast(tuple[Any, ...], reply.body)
        except TimeoutError as e:
            raise BusError("streamcore.Timeout", f"no reply from the {self.kind} within "
                           f"{self._timeout:g} s", _errno.ETIMEDOUT) from e
        except BusError:
            raise
        except OSError as e:
            raise BusError("streamcore.NoBus", f"{self.kind} I/O failed: {e}",
                           e.errno or _errno.EIO) from e

    def get_property(self, address: DBusAddress, name: str) -> Any:
        """Read one property through org.freedesktop.DBus.Properties.Get."""
        (signature_and_value,) = self.call(Properties(address).get(name))
        return signature_and_value[1]

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> BusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
