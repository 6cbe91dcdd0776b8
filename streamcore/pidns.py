"""Which ids name our threads to a service on the other side of a PID namespace.

rtkit looks the pid and tid it is given up in its own /proc, and checks them against the pid
the system bus reports for the caller.  In a PID namespace (a container, ``unshare --pid``,
a sandbox) our ids mean nothing there: rtkit answers "No such file or directory".  What can
still work (verified on these machines, ../shared/ENV.md "Realtime for sandboxed
processes"):

- the host's ids, when this process's /proc belongs to an ancestor namespace: the ``NSpid:``
  line of /proc/self/task/TID/status lists a thread's id in every namespace from that one
  down to ours, the first being the one rtkit and the bus use (a namespace with its own /proc,
  such as bwrap --proc or unshare --mount-proc, hides them);
- rtkit's own-pid form for the main thread only: ``MakeThreadRealtime(0, priority)`` names
  the caller's main thread by the pid the bus sees.

Otherwise there is nothing to ask rtkit for, and the reason says so (the XDG portal maps the
ids of Flatpak apps: :mod:`streamcore.portal`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["RtkitTarget", "nspid", "rtkit_target"]


@dataclass(frozen=True)
class RtkitTarget:
    """The ids to give rtkit for a thread.

    Parameters
    ----------
    pid, tid : int
        As rtkit (and the bus) see them; ``tid`` 0 with ``main_thread_form``.
    main_thread_form : bool
        Ask with ``MakeThreadRealtime(0, priority)``: the caller's main thread, named by the
        pid the bus sees.
    note : str
        What was done to get there ("" when the ids are our own).
    """

    pid: int
    tid: int
    main_thread_form: bool = False
    note: str = ""


def _nspid_line(path: str) -> tuple[int, ...]:
    try:
        with open(path) as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return tuple(int(x) for x in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def nspid(tid: int | None = None) -> tuple[int, ...]:
    """A thread's (or with None this process's) id in each PID namespace, outermost first.

    Parameters
    ----------
    tid : int or None
        A thread of this process, by its id in this process's namespace; None: the process.

    Returns
    -------
    tuple of int
        From the ``NSpid:`` line of its status in /proc (the last entry is ``tid``); one
        entry outside any namespace (or when /proc belongs to our own namespace); empty when
        ``tid`` is no thread of this process.

    Notes
    -----
    Where /proc belongs to an outer namespace, /proc/self/task lists the threads by their
    outer ids: the thread is found by the last entry of each one's NSpid.
    """
    if tid is None:
        return _nspid_line("/proc/self/status")
    chain = _nspid_line(f"/proc/self/task/{tid}/status")
    if chain and chain[-1] == tid:
        return chain
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return ()
    for task in tasks:
        chain = _nspid_line(f"/proc/self/task/{task}/status")
        if chain and chain[-1] == tid:
            return chain
    return ()


def rtkit_target(tid: int, bus_pid: int | None) -> RtkitTarget | str:
    """The ids rtkit can use for thread ``tid`` of this process, or why there are none.

    Parameters
    ----------
    tid : int
        A thread of this process (its id here).
    bus_pid : int or None
        The pid the system bus reports for our connection (GetConnectionUnixProcessID);
        None when it could not be asked (then our ids are used, as without a namespace).

    Returns
    -------
    RtkitTarget or str
        The ids to ask with, or the reason rtkit cannot be asked for this thread.
    """
    own = os.getpid()
    if bus_pid is None or bus_pid == own:
        return RtkitTarget(own, tid)
    process, thread = nspid(), nspid(tid)
    if len(process) > 1 and process[0] == bus_pid and len(thread) == len(process):
        return RtkitTarget(process[0], thread[0],
                           note=f"PID namespace: rtkit asked with the host's ids (pid "
                                f"{process[0]}, thread {thread[0]}) read from NSpid")
    if tid == own:
        return RtkitTarget(bus_pid, 0, main_thread_form=True,
                           note=f"PID namespace: rtkit asked for the main thread by the pid "
                                f"the bus sees ({bus_pid})")
    return (f"rtkit cannot see this thread: PID namespace (the system bus sees this process "
            f"as pid {bus_pid}, here it is {own}, and /proc shows no host ids for thread "
            f"{tid}: it belongs to the namespace); use the XDG portal or run outside the "
            f"namespace")
