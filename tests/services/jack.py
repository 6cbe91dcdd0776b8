"""A JACK server with the dummy backend: a real, clock-driven sound device without hardware.

Each test session starts its own server under a unique name (JACK_DEFAULT_SERVER), so a
server that another session runs is never reused by accident.  PortAudio only sees JACK
devices that exist when it initialises, so sounddevice is re-initialised once the server runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.services.common import Service, require_program, wait_until

SAMPLERATE = 48000
PERIOD = 256


@dataclass
class JackServer:
    service: Service
    name: str
    samplerate: int
    period: int
    device: int  # the sounddevice index of the JACK output device

    def stop(self) -> None:
        import sounddevice as sd

        # PortAudio's JACK host API asserts (aborting the process) if it terminates after the
        # server is gone: let it go first, then re-initialise without JACK.
        sd._terminate()
        self.service.stop()
        sd._initialize()


def _server_answers(name: str) -> bool:
    import jack

    try:
        client = jack.Client("streamcore-probe", no_start_server=True, servername=name)
    except jack.JackError:
        return False
    client.close()
    return True


def start_jack(workdir: Path, name: str | None = None, period: int = PERIOD,
               rescan_portaudio: bool = True) -> JackServer:
    """Start jackd (dummy backend) and, with ``rescan_portaudio``, re-initialise PortAudio so
    it lists the new device (``.device``; -1 without the rescan: a PortAudio whose server died
    must not be terminated, the device sink loads a fresh one itself)."""
    jackd = require_program("jackd", "jackd2")
    name = name or f"streamcore-test-{os.getpid()}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": name}
    # Realtime when we may (root): the device then behaves like a desktop's.
    realtime = [] if os.geteuid() == 0 else ["--no-realtime"]
    argv = [jackd, "--name", name, *realtime, "-d", "dummy", "-r", str(SAMPLERATE),
            "-p", str(period)]
    service = Service("jackd", argv, workdir / "jackd.log", env=env)
    try:
        os.environ["JACK_DEFAULT_SERVER"] = name
        os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
        if not wait_until(lambda: not service.alive() or _server_answers(name), 15, 0.1) \
                or not service.alive():
            raise RuntimeError(service.describe_failure("jackd did not start"))
        if not rescan_portaudio:
            return JackServer(service, name, SAMPLERATE, period, -1)
        import sounddevice as sd

        sd._terminate()  # re-scan host APIs now that the JACK server exists
        sd._initialize()
        for index, dev in enumerate(sd.query_devices()):
            hostapi = sd.query_hostapis(dev["hostapi"])["name"]
            if "JACK" in hostapi and dev["max_output_channels"] > 0:
                return JackServer(service, name, SAMPLERATE, period, index)
        raise RuntimeError(service.describe_failure(
            "jackd runs but PortAudio lists no JACK output device"))
    except BaseException:
        service.stop()
        raise


def settle(server: JackServer, quiet: float = 1.0, limit: float = 15.0) -> int:
    """Wait until the server has run ``quiet`` seconds without an xrun (at most ``limit``
    seconds); returns the xruns seen meanwhile.  A dummy server just started xruns by itself
    on this 2-core VM, most at small periods (at 64 frames: 38, 51, 43, 13, 1 xruns in five
    consecutive idle 3 s windows), so runs that judge audio wait for it first."""
    import time

    import jack

    client = jack.Client("streamcore-settle", servername=server.name, no_start_server=True)
    xruns: list[float] = []
    client.set_xrun_callback(xruns.append)
    client.activate()
    try:
        deadline = time.monotonic() + limit
        seen, calm_since = 0, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if len(xruns) != seen:
                seen, calm_since = len(xruns), time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                break
    finally:
        client.deactivate()
        client.close()
    return len(xruns)
