"""Facts of this process that several modules read, read in one place.

- rlimits: :func:`rlimit` (soft, hard; ``None`` is ``RLIM_INFINITY``), :func:`rlimit_fields`
  (the same as the ``{"soft", "hard"}`` dict that `streamcore info` and `doctor` print) and
  :func:`limit_text`;
- capabilities: :func:`capabilities` and :func:`has_capability`, from ``CapEff`` in
  ``/proc/thread-self/status`` (or ``/proc/<pid>/status``);
- the mlock probe: :func:`probe_mlock` (the native ``sc_probe_mlock``);
- the native core itself: :func:`native_core` says whether ``streamcore._native`` is loaded,
  beside this package and built for :data:`NATIVE_ABI_VERSION`, and how to rebuild it.

``streamcore.system`` (`streamcore info`), ``streamcore.doctor`` and ``streamcore.realtime``
call these instead of keeping copies of their own (issue 13).  Nothing here imports the
native core at import time, so this module works (and says why) when it is missing.

Concurrency: any thread may call any function; each reads the kernel's current value (no
caching), so a limit lowered a moment ago reads lowered.  Capabilities are per thread: the
default reads the calling thread's, as ``capget(0)`` does.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CAPABILITY_BITS",
    "NATIVE_ABI_VERSION",
    "NativeCore",
    "capabilities",
    "effective_capabilities",
    "has_capability",
    "limit_text",
    "native_core",
    "probe_mlock",
    "rebuild_hint",
    "rlimit",
    "rlimit_fields",
    "set_soft_rlimit",
    "unlimited_as_none",
]

NATIVE_ABI_VERSION = 1
"""The ``SC_ABI_VERSION`` (native/streamcore.h) this Python code is written against.  Bump it
in the same commit as the header's; tests/test_facts.py fails while the two differ."""

CAPABILITY_BITS = {"CAP_IPC_LOCK": 14, "CAP_SYS_NICE": 23, "CAP_SYS_RESOURCE": 24}
"""Bit numbers (linux/capability.h) of the capabilities streamcore asks about."""

_ALL_CAPABILITIES = ("CAP_SYS_NICE", "CAP_IPC_LOCK", "CAP_SYS_RESOURCE")


# ---- rlimits ------------------------------------------------------------------------------


def unlimited_as_none(value: int) -> int | None:
    """An rlimit value with ``RLIM_INFINITY`` as None.

    Parameters
    ----------
    value : int
        A soft or hard limit as ``resource.getrlimit`` returns it.

    Returns
    -------
    int or None
        The limit, or None for "unlimited".
    """
    return None if value == resource.RLIM_INFINITY else int(value)


def rlimit(which: int) -> tuple[int | None, int | None]:
    """This process's ``(soft, hard)`` limit ``which``, unlimited as None.

    Parameters
    ----------
    which : int
        A ``resource.RLIMIT_*`` constant (streamcore reads RTPRIO, MEMLOCK, RTTIME, NICE).

    Returns
    -------
    tuple of (int or None, int or None)
        The soft and the hard limit now, in the limit's own unit (bytes, a priority, µs).
    """
    soft, hard = resource.getrlimit(which)
    return unlimited_as_none(soft), unlimited_as_none(hard)


def rlimit_fields(which: int) -> dict[str, int | None]:
    """:func:`rlimit` as ``{"soft": ..., "hard": ...}``, the shape the JSON reports use.

    Parameters
    ----------
    which : int
        A ``resource.RLIMIT_*`` constant.

    Returns
    -------
    dict of str to int or None
        Keys ``soft`` and ``hard``; None is unlimited.
    """
    soft, hard = rlimit(which)
    return {"soft": soft, "hard": hard}


def set_soft_rlimit(which: int, soft: int) -> None:
    """Set the soft limit ``which`` to ``soft``, keeping the hard limit as it is.

    Parameters
    ----------
    which : int
        A ``resource.RLIMIT_*`` constant.
    soft : int
        The new soft limit (at most the hard one, unless the process may raise that).

    Raises
    ------
    OSError
        The kernel refused.
    ValueError
        ``soft`` is above the hard limit.
    """
    resource.setrlimit(which, (soft, resource.getrlimit(which)[1]))


def limit_text(value: int | None, unit: str = "") -> str:
    """A limit for people: ``"unlimited"`` for None, else the number and ``unit``.

    Parameters
    ----------
    value : int or None
        A limit from :func:`rlimit` (None: unlimited).
    unit : str
        Appended to a number as it is (e.g. ``" B"``, ``" µs"``).

    Returns
    -------
    str
        The text.
    """
    return "unlimited" if value is None else f"{value}{unit}"


# ---- capabilities -------------------------------------------------------------------------


def _status_path(pid: int | None) -> str:
    return "/proc/thread-self/status" if pid is None else f"/proc/{pid}/status"


def effective_capabilities(pid: int | None = None) -> int:
    """The effective capability set (``CapEff``) as a bit mask.

    Parameters
    ----------
    pid : int or None
        A process (or, as ``/proc`` allows, thread) id; None: the calling thread.

    Returns
    -------
    int
        The mask; bit ``n`` is capability ``n`` (see :data:`CAPABILITY_BITS`).

    Raises
    ------
    OSError
        The status file cannot be read (no such process, no /proc).
    ValueError
        The status file has no ``CapEff`` line.
    """
    path = _status_path(pid)
    with open(path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise ValueError(f"no CapEff line in {path}")


def capabilities(names: tuple[str, ...] = _ALL_CAPABILITIES,
                 pid: int | None = None) -> dict[str, bool]:
    """Whether each capability of ``names`` is in the effective set.

    Parameters
    ----------
    names : tuple of str
        Keys of :data:`CAPABILITY_BITS`, in the order the result should have.
    pid : int or None
        As for :func:`effective_capabilities`.

    Returns
    -------
    dict of str to bool
        One entry per name, in the order given.

    Raises
    ------
    OSError
        The status file cannot be read.
    ValueError
        It has no ``CapEff`` line.
    KeyError
        A name is not in :data:`CAPABILITY_BITS`.
    """
    mask = effective_capabilities(pid)
    return {name: bool(mask >> CAPABILITY_BITS[name] & 1) for name in names}


def has_capability(name: str, pid: int | None = None) -> bool | None:
    """Whether capability ``name`` is effective, or None when that cannot be read.

    Parameters
    ----------
    name : str
        A key of :data:`CAPABILITY_BITS`.
    pid : int or None
        As for :func:`effective_capabilities`.

    Returns
    -------
    bool or None
        None when the status file is unreadable or has no ``CapEff`` line.
    """
    try:
        return capabilities((name,), pid)[name]
    except (OSError, ValueError):
        return None


# ---- the native core ----------------------------------------------------------------------


def _source_tree() -> Path | None:
    """The source checkout this package lives in (an editable install), or None."""
    root = Path(__file__).resolve().parent.parent
    if (root / "setup.py").is_file() and (root / "native" / "streamcore.h").is_file():
        return root
    return None


def rebuild_hint() -> str:
    """How to build the native core again, as one clause for an error line.

    Returns
    -------
    str
        The commands for a source checkout (named when this package lives in one), or
        reinstalling the package.
    """
    root = _source_tree()
    where = f"in {root}" if root is not None else "in the source tree"
    return (f"rebuild it with `pip install -e .` {where} (or `touch setup.py && make test`), "
            "or reinstall streamcore")


@dataclass(frozen=True)
class NativeCore:
    """Whether the compiled core ``streamcore._native`` can be used, and why not.

    Parameters
    ----------
    state : str
        ``'ok'``; ``'missing'`` (it does not import); ``'stale'`` (it imports but was built
        for another ABI version, or lies outside this package's directory, i.e. was built from
        other sources).
    path : str or None
        The shared object's file, when it imported.
    abi_version : int or None
        What its ``sc_abi_version()`` returns (None: it has no such function).
    cflags : str or None
        The compiler flags it reports.
    error : str or None
        Why it is missing or stale, one line; None when ``ok``.

    Notes
    -----
    Made by :func:`native_core`; a frozen value.
    """

    state: str
    path: str | None
    abi_version: int | None
    cflags: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the native core is loaded, beside this package and of this ABI."""
        return self.state == "ok"

    def problem(self) -> str | None:
        """One line for a person: what is wrong and how to rebuild; None when ``ok``.

        Returns
        -------
        str or None
            E.g. ``"the native core is missing (No module named ...): rebuild it with ..."``.
        """
        if self.ok:
            return None
        return f"the native core is {self.state} ({self.error}): {rebuild_hint()}"


def native_core() -> NativeCore:
    """Import ``streamcore._native`` (if not yet) and say whether it is usable.

    Returns
    -------
    NativeCore
        Its state, file, ABI version and build flags.

    Notes
    -----
    Never raises for a missing or broken module: that is the answer, in ``state`` and
    ``error``.  An import hook (an editable install's) can supply a module from another
    checkout; that one is reported ``stale``, as its sources are not this package's.
    """
    try:
        import streamcore._native as module
    except ImportError as e:
        return NativeCore("missing", None, None, None, " ".join(str(e).split()))
    lib: Any = module.lib
    path = str(module.__file__)
    flags = getattr(lib, "sc_build_flags", None)
    cflags = module.ffi.string(flags()).decode() if flags is not None else None
    abi = getattr(lib, "sc_abi_version", None)
    version = int(abi()) if abi is not None else None
    error = None
    if version is None:
        error = (f"{path} has no sc_abi_version(): built from older sources than this "
                 f"streamcore, which needs ABI {NATIVE_ABI_VERSION}")
    elif version != NATIVE_ABI_VERSION:
        error = (f"{path} was built for ABI {version}, this streamcore needs ABI "
                 f"{NATIVE_ABI_VERSION}")
    else:
        package = Path(__file__).resolve().parent
        if Path(path).resolve().parent != package:
            error = (f"{path} was loaded, not a build beside this package in {package}: it "
                     "was built from other sources")
    return NativeCore("ok" if error is None else "stale", path, version, cflags, error)


def probe_mlock(nbytes: int) -> str | None:
    """Try to lock ``nbytes`` of fresh memory now (then unlock and free it).

    Parameters
    ----------
    nbytes : int
        How much to lock (> 0), e.g. what an engine's buffers need.

    Returns
    -------
    str or None
        None when the memory could be locked, else why not (the errno's text).

    Raises
    ------
    ImportError
        The native core (which does the probe) does not import, or has no probe.
    """
    from streamcore._native import lib

    probe = getattr(lib, "sc_probe_mlock", None)
    if probe is None:
        raise ImportError("the native core has no sc_probe_mlock(): it is stale")
    rc = int(probe(nbytes))
    return None if rc == 0 else os.strerror(-rc)
