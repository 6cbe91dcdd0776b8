"""Realtime from inside a PID namespace, with no portal (issue 18): the suite's real rtkit on
its private system bus, the unprivileged test user (RLIMIT_RTPRIO 0: rtkit is the way), and
a real PID namespace made by the fixture's child (unshare(CLONE_NEWPID) and fork: it is
pid 1 there).

- The host's /proc kept (``unshare --pid --fork``): NSpid shows the host's ids and rtkit
  grants with them, for any thread.
- Its own /proc (``unshare --pid --fork --mount-proc``): a thread other than the main one
  cannot be named to rtkit; the grant says exactly why.  The main thread still gets realtime
  through rtkit's own-pid form.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("rtkit_bus")


def _promote_here() -> dict:
    """As the test user, in the namespace: promote a second thread, then the main one."""
    import os
    import threading

    from streamcore import acquire_realtime
    from streamcore.pidns import nspid

    tid: list[int] = []
    ready, done = threading.Event(), threading.Event()

    def worker() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(30)
    try:
        second = acquire_realtime(tid=tid[0], priority=5)
    finally:
        done.set()
        thread.join()
    main = acquire_realtime(priority=5)

    def summary(grant) -> dict:
        return {"method": grant.method, "policy": grant.policy, "reasons": list(grant.reasons),
                "notes": list(grant.notes)}

    return {"pid": os.getpid(), "nspid": list(nspid()), "second": summary(second),
            "main": summary(main)}


class TestPidNamespace:
    def test_with_the_hosts_proc_rtkit_gets_the_hosts_ids(self, unprivileged):
        got = unprivileged.run(_promote_here, pid_namespace="host-proc").unwrap()
        assert got["pid"] == 1 and len(got["nspid"]) == 2 and got["nspid"][1] == 1
        for which in ("second", "main"):
            grant = got[which]
            assert grant["method"] == "rtkit" and grant["policy"] == "rr", grant
            assert any("host's ids" in note for note in grant["notes"]), grant

    def test_with_its_own_proc_only_the_main_thread_can_be_named(self, unprivileged):
        got = unprivileged.run(_promote_here, pid_namespace="own-proc").unwrap()
        assert got["pid"] == 1 and got["nspid"] == [1]  # the host's ids are hidden
        second = got["second"]
        assert second["method"] != "rtkit" and second["policy"] == "other", second
        (reason,) = [r for r in second["reasons"] if r.startswith("rtkit: ")]
        assert reason.startswith("rtkit: rtkit cannot see this thread: PID namespace (the "
                                 "system bus sees this process as pid ")
        assert reason.endswith("use the XDG portal or run outside the namespace")
        main = got["main"]
        assert main["method"] == "rtkit" and main["policy"] == "rr", main
        assert any("main thread by the pid the bus sees" in n for n in main["notes"]), main

    def test_outside_a_namespace_nothing_changes(self, unprivileged):
        got = unprivileged.run(_promote_here).unwrap()
        assert len(got["nspid"]) == 1 and got["pid"] != 1
        for which in ("second", "main"):
            grant = got[which]
            assert grant["method"] == "rtkit" and not any("PID namespace" in n
                                                          for n in grant["notes"]), grant
