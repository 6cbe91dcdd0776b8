"""Session fixtures that start real services and stop them by pid.

- ``jack_server``: jackd with the dummy backend; yields a JackServer (``.device`` is the
  sounddevice index of its output device).
- ``pipewire_server``: a headless PipeWire daemon (private runtime dir, a null sink driving the
  graph at 256 frames); its clients run in child processes (see tests/services/pipewire.py).
- ``rtkit_bus``: a private system bus + polkitd (with a rule for the test group) + rtkit-daemon;
  DBUS_SYSTEM_BUS_ADDRESS points at it while a module that asks for it runs.
- ``unprivileged``: runs a function as the non-root test user (see tests/services/unprivileged.py).

Outside CI a missing program skips with the Debian package to install; with CI=true it fails.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

# The repository root, so `tests.services` imports the same way under any rootdir/cwd.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.services.jack import start_jack
from tests.services.pipewire import start_pipewire
from tests.services.rtkit import rtkit_bus_in_use
from tests.services.unprivileged import unprivileged_service


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory):
    server = start_jack(tmp_path_factory.mktemp("jack"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pipewire_server(tmp_path_factory):
    # Session scope: tests that need another quantum start their own with start_pipewire().
    server = start_pipewire(tmp_path_factory.mktemp("pipewire"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rtkit_bus():
    # Module scope: the machine-wide rtkit lock (tests/services/rtkit.py) is held only while a
    # module that needs rtkit runs, so test runs of other checkouts can take their turn.
    with rtkit_bus_in_use() as trio:
        yield trio


@pytest.fixture(scope="session")
def unprivileged():
    return unprivileged_service()
