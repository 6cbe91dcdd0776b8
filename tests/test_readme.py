"""The README's code cannot rot: its Python blocks run in order in one namespace, and the
commands of its `streamcore` section run in a shell, all in a temporary directory."""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


class TestReadme:
    """Every code block of the README runs."""

    def test_python_blocks_run(self, tmp_path, monkeypatch):
        """The tour's snippets, in order, with what they print checked loosely."""
        code = blocks("python")
        assert len(code) >= 6
        monkeypatch.chdir(tmp_path)
        namespace: dict[str, object] = {"__name__": "readme"}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for i, block in enumerate(code):
                exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        printed = out.getvalue()
        assert "xruns: 0" in printed
        assert "finished 24000" in printed
        assert "the other process wrote 32768 frames" in printed
        assert "zero copy: True" in printed
        assert "(512, 2) True" in printed
        assert "(1000, 2) True" in printed
        assert "finished closed" in printed
        assert (tmp_path / "tour.flac").exists()

    def test_script_blocks_run(self, tmp_path):
        """The blocks marked ``python script`` (a producer process needs an importable
        function and the ``__main__`` guard) run as scripts, each in a new interpreter."""
        scripts = blocks("python script")
        assert scripts
        for i, code in enumerate(scripts):
            path = tmp_path / f"readme_script_{i + 1}.py"
            path.write_text(code)
            done = subprocess.run([sys.executable, str(path)], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (code, done.stderr)
            assert done.stdout.strip(), f"script block {i + 1} printed nothing"
        assert "finished 0" in done.stdout  # the producer process's block prints its end

    def test_command_block_runs(self, tmp_path):
        """The `streamcore` section's commands, on a machine without a sound device (aplay
        plays to its null PCM: there is no sound card here)."""
        (command_block,) = re.findall(r"^```sh\n(.*?)^```", section("The `streamcore` command"),
                                      flags=re.S | re.M)
        shutil.copy(ROOT / "demos" / "sounds" / "chime.flac", tmp_path / "song.flac")
        env = {**os.environ, "JACK_DEFAULT_SERVER": f"streamcore-absent-{os.getpid()}",
               "TMPDIR": str(tmp_path),
               "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
        lines = [line.split("  #")[0].strip() for line in command_block.splitlines()]
        assert len(lines) >= 6
        for line in lines:
            line = line.replace("| aplay", "| aplay -q -D null")
            done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (line, done.stderr)
        assert (tmp_path / "heard.wav").exists()

    @pytest.mark.parametrize("heading", ["Quickstart", "How realtime works here",
                                         "What zero-copy means here", "Troubleshooting"])
    def test_sections_exist(self, heading):
        assert f"\n## {heading}\n" in README

    def test_quickstart_keeps_its_two_commands(self):
        (quick,) = re.findall(r"^```sh\n(.*?)^```", section("Quickstart"), flags=re.S | re.M)
        assert [line.split("#")[0].strip() for line in quick.splitlines()] == [
            "make demo", "make test"]
