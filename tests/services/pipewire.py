"""A PipeWire server without hardware or session manager: the default audio server of today's
desktops, as a second real "sound device" next to JACK's dummy backend.

``start_pipewire()`` runs ``pipewire -c CONF`` headless, with a private XDG_RUNTIME_DIR (mode
700) and HOME, so it never meets a desktop's server nor another test's.  CONF (``_CONF``, after
../shared/recipes/pipewire/pipewire.conf) has one null sink, a ``support.null-audio-sink`` on a
monotonic timer that drives the graph at the quantum asked for, with ``playback_FL/FR`` inputs
and ``monitor_FL/FR`` outputs (what the sink received), and loads the profiler module: xruns
under PipeWire are invisible to clients (no JACK xrun callback, no PortAudio underflow flag), so
``pw-profiler``'s missed cycles are the ground truth for gating audio assertions.

Clients reach it in CHILD processes only: PortAudio and libjack are loaded once per process, and
the test process itself stays on the jackd fixture.  ``jack_env()`` puts pipewire-jack's libjack
first (what ``pw-jack`` does), ``alsa_env()`` gives ALSA the ``pipewire`` and ``default`` PCMs of
PipeWire's ALSA plugin, unpacked by ``make pipewire-alsa`` into build/pipewire-alsa (the Debian
package is never installed: it would make ALSA's default PipeWire for every process on the
machine).  ``run_child(code, via=...)`` runs Python code in such a child and returns the last
JSON line it printed; in the child, ``list_ports``, ``wait_for_ports`` and ``link_ports`` reach
the server through the child's own environment (an ALSA stream's node needs linking: no session
manager does it).

Glitches: gate audio assertions on ``with server.profiler() as p: ...`` then
``p.count.glitches`` (missed follower cycles, ``count_profiler_glitches()``) and run again when
it is not 0, as the JACK tests do with server xruns.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sysconfig
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from streamcore.sinks.pipewire import FINISHED, profiler_cycle
from tests.helpers.child import ChildFailed, run_python  # noqa: F401  (ChildFailed: re-exported)
from tests.services.common import Service, require_program, unavailable, wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLERATE = 48000
QUANTUM = 256
SINK_NAME = "null-sink"
SOCKET_NAME = "pipewire-0"  # core.name: the socket in the private XDG_RUNTIME_DIR
ALSA_PLUGIN_DIR = ROOT / "build" / "pipewire-alsa"  # `make pipewire-alsa` unpacks it here
# Without a session manager nothing gives an ALSA stream's node ports: the plugin's stream
# properties ask the adapter for them (then link the node with `link()`).
PIPEWIRE_ALSA = ("{ adapter.auto-port-config = { mode = dsp monitor = false control = false "
                 "position = preserve } }")

_CONF = """\
# Written by tests/services/pipewire.py: headless, no hardware, no session manager.
context.properties = {{
    core.daemon                 = true
    core.name                   = {socket}
    link.max-buffers            = 16
    default.clock.rate          = {rate}
    default.clock.allowed-rates = [ {rate} ]
    default.clock.quantum       = {quantum}
    default.clock.min-quantum   = {min_quantum}
    default.clock.max-quantum   = {max_quantum}
    settings.check-quantum      = true
    settings.check-rate         = true
    log.level                   = 2
}}
context.spa-libs = {{
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}}
context.modules = [
    # SCHED_FIFO 88 for the data thread as root (like jackd's realtime); nofail elsewhere.
    {{ name = libpipewire-module-rt  args = {{ nice.level = -11  rt.prio = 88 }}
       flags = [ ifexists nofail ] }}
    {{ name = libpipewire-module-protocol-native }}
    {{ name = libpipewire-module-profiler }}
    {{ name = libpipewire-module-metadata }}
    {{ name = libpipewire-module-spa-node-factory }}
    {{ name = libpipewire-module-client-node }}
    {{ name = libpipewire-module-access  args = {{ }} }}
    {{ name = libpipewire-module-adapter }}
    {{ name = libpipewire-module-link-factory }}
]
context.objects = [
    {{ factory = metadata  args = {{ metadata.name = default }} }}
    {{ factory = adapter
        args = {{
            factory.name     = support.null-audio-sink
            node.name        = "{sink}"
            node.description = "{sink}"
            media.class      = "Audio/Sink"
            audio.rate       = {rate}
            audio.channels   = 2
            audio.position   = [ FL FR ]
            object.linger    = true
            priority.driver  = 20000
            # the ports a session manager would otherwise create, monitors included
            adapter.auto-port-config = {{
                mode = dsp  monitor = true  control = false  position = preserve
            }}
        }}
    }}
]
context.exec = [ ]
"""


# -- pw-profiler's log, on data alone -------------------------------------------------------

@dataclass
class FollowerCycles:
    """One follower node's cycles in a profiler log: those before its first finished cycle
    (joining), from its first to its last finished one (steady, of which ``missed`` did not
    finish), and after (leaving)."""

    node: int
    joining: int
    steady: int
    missed: int
    leaving: int

    @property
    def finished_ever(self) -> bool:
        return self.steady > 0


@dataclass
class ProfilerCount:
    """What a pw-profiler log says: driver cycles, their periods, late driver cycles, and the
    steady-state cycles that followers missed (the glitches, what pw-top adds to ERR)."""

    cycles: int = 0
    periods_us: dict[int, int] = field(default_factory=dict)
    late_driver_cycles: int = 0
    followers: dict[int, FollowerCycles] = field(default_factory=dict)

    @property
    def steady_missed(self) -> int:
        return sum(f.missed for f in self.followers.values())

    @property
    def glitches(self) -> int:
        """The glitch count: steady-state cycles a follower missed.  Late driver cycles are
        not in it: the driver reads late in the cycles where a client joins (1-3 per run)."""
        return self.steady_missed

    def __str__(self) -> str:
        return (f"profiler: {self.cycles} cycles, periods_us={self.periods_us}, "
                f"late driver cycles {self.late_driver_cycles}, steady missed "
                f"{self.steady_missed}, followers {list(self.followers.values())}")


_LATE = 1.3  # pw-profiler writes 1.4 x period for a driver interval over 1.3 x period


def count_profiler_glitches(lines: Iterable[str]) -> ProfilerCount:
    """Count cycles and glitches in a pw-profiler log, after the run (the log's columns:
    :func:`streamcore.sinks.pipewire.profiler_cycle`).  A follower's status other than
    FINISHED in its steady state (from its first finished cycle to its last) is a missed
    cycle; joining and leaving cycles are not glitches."""
    count = ProfilerCount()
    periods: collections.Counter[int] = collections.Counter()
    statuses: dict[int, list[int]] = collections.defaultdict(list)
    for line in lines:
        cycle = profiler_cycle(line)
        if cycle is None:
            continue
        (since_signal, to_finish, _delay, period), followers = cycle
        periods[round(period)] += 1
        if max(since_signal, to_finish) > _LATE * period:
            count.late_driver_cycles += 1
        for node, status in followers:
            statuses[node].append(status)
        count.cycles += 1
    count.periods_us = dict(periods)
    for node, sts in statuses.items():
        finished = [i for i, s in enumerate(sts) if s == FINISHED]
        if not finished:
            count.followers[node] = FollowerCycles(node, len(sts), 0, 0, 0)
            continue
        first, last = finished[0], finished[-1]
        count.followers[node] = FollowerCycles(
            node, joining=first, steady=last - first + 1,
            missed=sum(1 for s in sts[first:last + 1] if s != FINISHED),
            leaving=len(sts) - last - 1)
    return count


# -- pw-link, for the test process and for children (their os.environ reaches the server) ---

def _run_tool(argv: list[str], env: dict[str, str] | None,
              timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def list_ports(output: bool = True, pattern: str = "",
               env: dict[str, str] | None = None) -> list[str]:
    """Port names (``node:port``) that `pw-link -o` (outputs) or `-i` (inputs) lists and that
    contain ``pattern``; ``env`` None: this process's environment (in a child)."""
    listing = _run_tool(["pw-link", "-o" if output else "-i"], env).stdout
    return [port for port in listing.splitlines() if port and pattern in port]


def wait_for_ports(count: int, pattern: str = "", output: bool = True,
                   exclude: Iterable[str] = (), timeout: float = 5,
                   env: dict[str, str] | None = None) -> list[str]:
    """The first ``count`` ports (sorted) that contain ``pattern`` and are not in
    ``exclude``, once that many exist (a new client's ports appear some ms after it opens);
    raise TimeoutError after ``timeout`` seconds."""
    excluded = set(exclude)
    found: list[str] = []

    def enough() -> bool:
        found[:] = sorted(set(list_ports(output, pattern, env)) - excluded)
        return len(found) >= count

    if not wait_until(enough, timeout, 0.02):
        raise TimeoutError(f"{count} {'output' if output else 'input'} ports with "
                           f"{pattern!r} did not appear in {timeout} s: {found}")
    return found[:count]


def list_links(env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(output, input) port names of every link, from `pw-link -l`."""
    links = []
    source = None
    for line in _run_tool(["pw-link", "-l"], env).stdout.splitlines():
        if not line.startswith(" "):
            source = line.strip()
        elif line.strip().startswith("|->") and source is not None:
            links.append((source, line.strip()[3:].strip()))
    return links


def link_ports(out_port: str, in_port: str, env: dict[str, str] | None = None,
               disconnect: bool = False) -> None:
    """`pw-link OUT IN` (or `pw-link -d OUT IN`); raise RuntimeError if PipeWire refuses."""
    argv = ["pw-link", *(["-d"] if disconnect else []), out_port, in_port]
    done = _run_tool(argv, env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


class StreamLinker:
    """Links the next stream that appears to a sink's playback ports, in a thread, as a
    session manager would (nothing else links an ALSA stream's node here).  Make it before
    the stream opens (it notes the ports that exist), ``start()``, open the stream, then
    ``join()``; ``linked`` holds the stream's ports."""

    def __init__(self, sink: str, env: dict[str, str] | None = None) -> None:
        import threading

        self.sink, self.env = sink, env
        self.existing = list_ports(output=True, env=env)
        self.linked: list[str] = []
        self._thread = threading.Thread(target=self._link, name="pipewire-linker")

    def _link(self) -> None:
        ports = wait_for_ports(2, output=True, exclude=self.existing, env=self.env)
        for port, channel in zip(ports, ("FL", "FR"), strict=True):
            link_ports(port, f"{self.sink}:playback_{channel}", self.env)
        self.linked.extend(ports)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()


# -- the server -----------------------------------------------------------------------------

def _multiarch_libdirs() -> list[Path]:
    """/usr/lib/<multiarch> first (Debian's layout), then /usr/lib and /usr/lib64."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs = [Path("/usr/lib") / multiarch] if multiarch else []
    return [*dirs, Path("/usr/lib"), Path("/usr/lib64")]


def pipewire_jack_dir() -> Path | None:
    """The folder of pipewire-jack's libjack.so.0 (what `pw-jack` puts in LD_LIBRARY_PATH)."""
    for libdir in _multiarch_libdirs():
        folder = libdir / "pipewire-0.3" / "jack"
        if (folder / "libjack.so.0").exists():
            return folder
    return None


def alsa_plugin_files() -> dict[str, Path] | None:
    """The unpacked ALSA plugin's two modules and two configuration files, or None."""
    found = {}
    for key, pattern in (("pcm", "usr/lib/*/alsa-lib/libasound_module_pcm_pipewire.so"),
                         ("ctl", "usr/lib/*/alsa-lib/libasound_module_ctl_pipewire.so"),
                         ("named", "usr/share/alsa/alsa.conf.d/50-pipewire.conf"),
                         ("default", "usr/share/alsa/alsa.conf.d/99-pipewire-default.conf")):
        matches = sorted(ALSA_PLUGIN_DIR.glob(pattern))
        if not matches:
            return None
        found[key] = matches[0]
    return found


class Profiler:
    """``pw-profiler`` on one server while a ``with`` block runs; ``.count`` afterwards.

    Use ``PipeWireServer.profiler()``.  Only cycles in which the graph ran are logged: a block
    in which no client was linked counts 0 cycles, which proves nothing.  PipeWire 0.3.65's
    profiler module sends its data once a second (a timer; later versions send every cycle), so
    leaving the block waits until data from after the block arrived (the log grows), at most
    ``settle`` seconds: stopping at once lost up to a second of cycles."""

    def __init__(self, server: PipeWireServer, folder: Path, settle: float = 1.5) -> None:
        self.server = server
        self.folder = folder  # pw-profiler writes gnuplot files into its cwd on exit
        self.log = folder / "profiler.log"
        self.settle = settle
        self.count: ProfilerCount | None = None
        self.service: Service | None = None

    def _log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def __enter__(self) -> Profiler:
        program = require_program("pw-profiler", "pipewire-bin")
        stdbuf = require_program("stdbuf", "coreutils")
        self.folder.mkdir(parents=True)
        # stdbuf: its "Attaching to Profiler" line is how we know it listens (stdio buffers it)
        service = self.service = Service(
            "pw-profiler", [stdbuf, "-oL", program, "-o", str(self.log)],
            self.folder / "stdout.log", env=self.server.client_env(), cwd=self.folder)
        if not wait_until(lambda: "Attaching" in service.log_text() or not service.alive(),
                          5, 0.01) or not service.alive():
            service.stop()
            raise RuntimeError(service.describe_failure("pw-profiler did not attach"))
        return self

    def __exit__(self, *exc: object) -> None:
        service = self.service
        assert service is not None
        time.sleep(0.05)  # what the log holds now may have been sent before the block ended
        size = self._log_size()
        wait_until(lambda: self._log_size() > size or not service.alive(), self.settle, 0.02)
        # SIGINT is its way out: it writes the rest of the log and its plot files
        if service.alive():
            os.kill(service.pid, signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):  # then stop() kills it
                service.process.wait(5)
        service.stop()
        if exc[0] is None:
            with open(self.log) as log:
                self.count = count_profiler_glitches(log)


@dataclass
class PipeWireServer:
    """A running headless PipeWire daemon (see the module docstring); stop it by pid."""

    service: Service
    workdir: Path
    runtime_dir: Path
    quantum: int
    samplerate: int
    sink_name: str
    start_seconds: float  # from exec to the sink listed by pw-cli
    _profiles: int = 0

    @property
    def pid(self) -> int:
        return self.service.pid

    @property
    def env(self) -> dict[str, str]:
        """The variables a child process needs to reach this server (and no other)."""
        return {"XDG_RUNTIME_DIR": str(self.runtime_dir),
                "PIPEWIRE_RUNTIME_DIR": str(self.runtime_dir),  # wins over XDG_RUNTIME_DIR
                "PIPEWIRE_REMOTE": SOCKET_NAME}

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A whole environment (``base``, default os.environ) for a native PipeWire client
        of this server (pw-cli, pw-link, pw-profiler): ``.env`` added, and the PIPEWIRE_*
        variables of a desktop session and JACK_DEFAULT_SERVER left out."""
        # The jackd fixture sets JACK_DEFAULT_SERVER in this process; pipewire-jack would take
        # it for a remote name and fail (JackOpenError: server_failed).
        env = {key: value for key, value in (os.environ if base is None else base).items()
               if not key.startswith("PIPEWIRE_") and key != "JACK_DEFAULT_SERVER"}
        env.update(self.env)
        return env

    def jack_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A whole environment (``base``, default os.environ) for a child whose libjack is
        pipewire-jack's, talking to this server; PortAudio's JACK host API then lists one
        device named after the sink."""
        folder = pipewire_jack_dir()
        if folder is None:
            unavailable("pipewire-jack's libjack.so.0 not found: "
                        "apt-get install --no-install-recommends pipewire-jack")
        env = self.client_env(base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(folder), *filter(None, [env.get("LD_LIBRARY_PATH")])])
        return env

    def alsa_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A whole environment for a child whose ALSA lists PipeWire's ``pipewire`` and
        ``default`` PCMs (this server).  A stream's node gets ports but no links: link it."""
        files = alsa_plugin_files()
        if files is None:
            unavailable(f"PipeWire's ALSA plugin is not unpacked in {ALSA_PLUGIN_DIR}: run "
                        "`make pipewire-alsa` as root (it needs apt-get download)")
        private = self.workdir / "alsa-pipewire.conf"
        if not private.exists():
            private.write_text(
                "# Written by tests/services/pipewire.py: the plugin unpacked in build/.\n"
                f'pcm_type.pipewire {{ lib "{files["pcm"]}" }}\n'
                f'ctl_type.pipewire {{ lib "{files["ctl"]}" }}\n'
                f'<{files["named"]}>\n<{files["default"]}>\n')
        env = self.client_env(base)
        env["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{private}"
        env["PIPEWIRE_ALSA"] = PIPEWIRE_ALSA
        return env

    def nodes(self) -> str:
        """`pw-cli ls Node`: the server's nodes and their properties, as text."""
        return _run_tool(["pw-cli", "ls", "Node"], self.client_env()).stdout

    def ports(self, output: bool = True, pattern: str = "") -> list[str]:
        """Port names (``node:port``) from `pw-link -o` (outputs) or `-i` (inputs) that
        contain ``pattern``."""
        return list_ports(output, pattern, self.client_env())

    def sink_ports(self, kind: str = "playback") -> list[str]:
        """The sink's ``playback_FL/FR`` inputs or ``monitor_FL/FR`` outputs."""
        if kind not in ("playback", "monitor"):
            raise ValueError(f"kind is 'playback' or 'monitor', not {kind!r}")
        return self.ports(output=(kind == "monitor"), pattern=f"{self.sink_name}:{kind}_")

    def links(self) -> list[tuple[str, str]]:
        """The links between ports, as (output, input) names (`pw-link -l`)."""
        return list_links(self.client_env())

    def link(self, out_port: str, in_port: str) -> None:
        """Link two ports by name (`pw-link OUT IN`); raise if PipeWire refuses."""
        link_ports(out_port, in_port, self.client_env())

    def unlink(self, out_port: str, in_port: str) -> None:
        """Remove the link between two ports (`pw-link -d OUT IN`)."""
        link_ports(out_port, in_port, self.client_env(), disconnect=True)

    def force_quantum(self, frames: int) -> None:
        """Change the graph's quantum while it runs (`pw-metadata -n settings 0
        clock.force-quantum FRAMES`; 0 gives the choice back), as a desktop's settings do;
        within the server's quantum range."""
        done = _run_tool(["pw-metadata", "-n", "settings", "0", "clock.force-quantum",
                          str(frames)], self.client_env())
        if done.returncode != 0:
            raise RuntimeError(f"pw-metadata: {done.stderr.strip() or done.returncode}")

    def profiler(self) -> Profiler:
        """A context manager that runs pw-profiler; its ``.count`` after the block."""
        self._profiles += 1
        return Profiler(self, self.workdir / f"profiler-{self._profiles}")

    def run_child(self, code: str, via: str = "jack", timeout: float = 60) -> dict:
        """Run Python ``code`` (dedented; the repository root on sys.path) in a child with
        ``jack_env()`` (via="jack"), ``alsa_env()`` ("alsa") or ``client_env()``
        ("pipewire"), and return the JSON object of the last line it printed."""
        envs = {"jack": self.jack_env, "alsa": self.alsa_env, "pipewire": self.client_env}
        if via not in envs:
            raise ValueError(f"via must be one of {sorted(envs)}, not {via!r}")
        return run_python(code, envs[via](None), timeout,
                          context=f"(via {via}) {self.service.describe_failure('server')}")

    def alive(self) -> bool:
        return self.service.alive()

    def stop(self) -> float:
        """SIGTERM by pid, then wait (SIGKILL after 5 s); returns the seconds it took.
        Safe to call again."""
        began = time.monotonic()
        self.service.stop()
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL by pid: the server dies as in a crash (for server-death tests)."""
        if self.service.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.service.process.wait(5)
        self.service.stop()


def _sink_listed(sink: str, pw_cli: str, env: dict[str, str]) -> bool:
    done = subprocess.run([pw_cli, "ls", "Node"], env=env, capture_output=True, text=True,
                          timeout=10)
    return f'node.name = "{sink}"' in done.stdout


def start_pipewire(workdir: Path, quantum: int = QUANTUM, name: str | None = None,
                   samplerate: int = SAMPLERATE,
                   quantum_range: tuple[int, int] | None = None) -> PipeWireServer:
    """Start a headless PipeWire daemon whose null sink ``name`` (default "null-sink") drives
    the graph at ``quantum`` frames; ready when `pw-cli ls Node` lists the sink.
    ``quantum_range``: the (min, max) quantum a client or `force_quantum()` may choose
    (default: exactly ``quantum``)."""
    pipewire = require_program("pipewire", "pipewire")
    pw_cli = require_program("pw-cli", "pipewire-bin")
    require_program("pw-link", "pipewire-bin")
    sink = name or SINK_NAME
    workdir.mkdir(parents=True, exist_ok=True)
    runtime_dir = workdir / "runtime"
    home = workdir / "home"
    runtime_dir.mkdir(mode=0o700)
    os.chmod(runtime_dir, 0o700)  # mkdir's mode is masked by the umask
    home.mkdir()
    conf = workdir / "pipewire.conf"
    low, high = quantum_range or (quantum, quantum)
    conf.write_text(_CONF.format(socket=SOCKET_NAME, rate=samplerate, quantum=quantum,
                                 min_quantum=low, max_quantum=high, sink=sink))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIPEWIRE_", "JACK_"))}
    env.update(XDG_RUNTIME_DIR=str(runtime_dir), PIPEWIRE_RUNTIME_DIR=str(runtime_dir),
               HOME=str(home), PIPEWIRE_DEBUG="2")
    began = time.monotonic()
    service = Service("pipewire", [pipewire, "-c", str(conf)], workdir / "pipewire.log",
                      env=env)
    try:
        if not wait_until(lambda: not service.alive()
                          or _sink_listed(sink, pw_cli, env), 10, 0.01) \
                or not service.alive():
            raise RuntimeError(service.describe_failure("pipewire did not list its sink"))
        return PipeWireServer(service, workdir, runtime_dir, quantum, samplerate, sink,
                              time.monotonic() - began)
    except BaseException:
        service.stop()
        raise


@contextmanager
def running_pipewire(workdir: Path, quantum: int = QUANTUM,
                     name: str | None = None) -> Iterator[PipeWireServer]:
    """start_pipewire() for one ``with`` block, stopped by pid at its end."""
    server = start_pipewire(workdir, quantum, name)
    try:
        yield server
    finally:
        server.stop()
