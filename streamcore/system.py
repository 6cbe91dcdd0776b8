"""What this machine and process offer streamcore: the figures `python -m streamcore` prints.

Each probe catches its own failure and reports it as text, so one missing piece (no
PortAudio, no bus) never hides the others.
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable
from typing import Any

from streamcore import _facts
from streamcore._version import __version__

__all__ = ["format_report", "limit_text", "print_report", "system_report"]

limit_text = _facts.limit_text

_PROBE_BYTES = 64 * 1024  # what the mlock line tries: a little, to answer yes or no


def _rlimits() -> dict[str, dict[str, int | None]]:
    return {name: _facts.rlimit_fields(getattr(resource, name))
            for name in ("RLIMIT_MEMLOCK", "RLIMIT_RTPRIO", "RLIMIT_RTTIME")}


def _native() -> dict[str, Any]:
    core = _facts.native_core()
    if core.state == "missing":
        return {"loaded": False, "state": core.state, "error": core.error,
                "fix": _facts.rebuild_hint()}
    return {
        "loaded": True,
        "state": core.state,
        "path": core.path,
        "abi_version": core.abi_version,
        "expected_abi_version": _facts.NATIVE_ABI_VERSION,
        "cflags": core.cflags,
        "error": core.error,
        "fix": None if core.ok else _facts.rebuild_hint(),
    }


def _mlock() -> dict[str, Any]:
    try:
        error = _facts.probe_mlock(_PROBE_BYTES)
    except ImportError as e:
        return {"can_lock": None, "error": str(e)}
    result: dict[str, Any] = {"can_lock": error is None, "probe_bytes": _PROBE_BYTES}
    if error is not None:
        result["error"] = error
    return result


def _capabilities() -> dict[str, Any]:
    try:
        return dict(_facts.capabilities())
    except (OSError, ValueError) as e:
        return {"error": f"cannot read the capabilities: {e}"}


def _portaudio() -> dict[str, Any]:
    try:
        import sounddevice as sd
    except OSError as e:  # sounddevice raises OSError when libportaudio2 is missing
        return {"available": False, "error": f"PortAudio not found: {e}"}
    devices = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_output_channels"] > 0:
            devices.append({
                "index": index,
                "name": dev["name"],
                "hostapi": sd.query_hostapis(dev["hostapi"])["name"],
                "channels": dev["max_output_channels"],
                "default_samplerate": dev["default_samplerate"],
            })
    return {"available": True, "version": sd.get_portaudio_version()[1], "output_devices": devices}


def _rtkit(timeout: float) -> dict[str, Any]:
    from streamcore import rtkit
    from streamcore.bus import BusError, system_bus_address

    try:
        limits = rtkit.read_limits(timeout)
    except BusError as e:
        return {"answers": False, "bus": system_bus_address(), "error": rtkit.explain(e)}
    return {
        "answers": True,
        "bus": system_bus_address(),
        "max_realtime_priority": limits.max_realtime_priority,
        "min_nice_level": limits.min_nice_level,
        "rttime_usec_max": limits.rttime_usec_max,
    }


def system_report(bus_timeout: float = 1.0) -> dict[str, Any]:
    """Collect the facts of this machine and process as a JSON-ready dict.

    Each probe catches its own failure and reports it as text in its entry.

    Parameters
    ----------
    bus_timeout : float
        Seconds the RealtimeKit probe may spend on the system bus.

    Returns
    -------
    dict of str to Any
        Keys: version, native (``state`` 'ok', 'missing' or 'stale', with the ``error`` and
        the ``fix`` when not ok), portaudio, mlock, rlimits (bytes, priorities and µs; None:
        unlimited), capabilities, rtkit.

    Notes
    -----
    Any thread; blocks up to ``bus_timeout`` s on the bus, so never from the audio path.
    """
    return {
        "version": __version__,
        "native": _native(),
        "portaudio": _portaudio(),
        "mlock": _mlock(),
        "rlimits": _rlimits(),
        "capabilities": _capabilities(),
        "rtkit": _rtkit(bus_timeout),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as short readable lines."""
    lines = [f"streamcore {report['version']}"]
    native = report["native"]
    if native["state"] == "ok":
        lines.append(f"native core: {native['path']}")
        lines.append(f"  built with: {native['cflags']}")
    else:  # missing or stale: what is wrong and how to rebuild, on the first line
        lines.append(f"native core: {native['state'].upper()} ({native['error']}): "
                     f"{native['fix']}")
        if native["loaded"]:
            lines.append(f"  built with: {native['cflags']}")
    pa = report["portaudio"]
    if pa["available"]:
        lines.append(f"PortAudio: {pa['version']}")
        if pa["output_devices"]:
            for d in pa["output_devices"]:
                lines.append(f"  output {d['index']}: {d['name']} ({d['hostapi']}, "
                             f"{d['channels']} ch, {d['default_samplerate']:g} Hz)")
        else:
            lines.append("  no output devices (use the null sink, a pipe or a file)")
    else:
        lines.append(f"PortAudio: unavailable: {pa['error']}")
    rl = report["rlimits"]
    memlock = rl["RLIMIT_MEMLOCK"]
    ml = report["mlock"]
    can = {True: "yes", False: f"no ({ml.get('error')})", None: "unknown"}[ml["can_lock"]]
    lines.append(f"mlock: {can}; RLIMIT_MEMLOCK soft {limit_text(memlock['soft'], ' B')}, "
                 f"hard {limit_text(memlock['hard'], ' B')}")
    rtprio, rttime = rl["RLIMIT_RTPRIO"], rl["RLIMIT_RTTIME"]
    lines.append(f"RLIMIT_RTPRIO soft {limit_text(rtprio['soft'])}, "
                 f"hard {limit_text(rtprio['hard'])}; "
                 f"RLIMIT_RTTIME soft {limit_text(rttime['soft'], ' µs')}, "
                 f"hard {limit_text(rttime['hard'], ' µs')}")
    caps = report["capabilities"]
    if "error" in caps:
        lines.append(f"capabilities: {caps['error']}")
    else:
        lines.append("capabilities: " + ", ".join(f"{k} {'yes' if v else 'no'}"
                                                  for k, v in caps.items()))
    rk = report["rtkit"]
    if rk["answers"]:
        lines.append(f"RealtimeKit: answers on {rk['bus']} (MaxRealtimePriority "
                     f"{rk['max_realtime_priority']}, MinNiceLevel {rk['min_nice_level']}, "
                     f"RTTimeUSecMax {rk['rttime_usec_max']} µs)")
    else:
        lines.append(f"RealtimeKit: no answer: {rk['error']}")
    return "\n".join(lines)


def print_report(report: dict[str, Any], as_json: bool,
                 format_text: Callable[[dict[str, Any]], str]) -> None:
    """Print a report as indented JSON, or as the lines ``format_text`` makes of it (what
    `streamcore info` and `streamcore doctor` do with theirs)."""
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_text(report))
