"""Build the native core with sanitizers, beside the installed one, for tests/test_sanitizers.py.

``build()`` compiles every cffi module that setup.py lists (``cffi_modules``: today
``streamcore._native``; a second module added there is built too, with the same flags; one
built some other way goes into EXTRA_CFFI_MODULES) with ``STREAMCORE_SANITIZE`` set (see
native/build.py) into ``build/sanitize/<digest>/``.  The digest covers everything the build
reads (the .c and .h of native/ and native/testing/, native/*.py, setup.py,
this file), the sanitizers, the compiler's version and
the interpreter's ABI, so a second run with nothing changed compiles nothing.  The editable
install's ``streamcore/_native*.so`` is never touched.

``assemble()`` makes a tree in which ``import streamcore`` gets the package's .py files with the
sanitized extension modules: a copy of streamcore/ (without its .so files), of tests/ and of
pyproject.toml.  Tests are copied, not linked: tests/conftest.py and some tests put the
directory above their own file first on sys.path, which must be the copy.

Run alone: ``.venv/bin/python tests/sanitize.py`` builds (if needed) and prints the directory.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "sanitize"
SANITIZERS = "address,undefined"
# cffi builders ("path:attribute", relative to the repository) that setup.py does not list but
# the sanitized tree needs too.  None today.
EXTRA_CFFI_MODULES: list[str] = []
# The compiler cffi's build uses: setuptools takes CC from the environment, else gcc here.
CC = os.environ.get("CC", "gcc")


def cffi_modules() -> list[str]:
    """The ``path:attribute`` entries of setup.py's ``cffi_modules`` (what pip builds), then
    EXTRA_CFFI_MODULES."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "cffi_modules":
            entries = ast.literal_eval(node.value)
            if entries and all(isinstance(e, str) and ":" in e for e in entries):
                return [*entries, *EXTRA_CFFI_MODULES]
    raise RuntimeError("setup.py has no literal cffi_modules=[...] list of 'path:attr' entries")


def _inputs() -> list[pathlib.Path]:
    native = ROOT / "native"
    files = [*native.glob("**/*.c"), *native.glob("**/*.h"), *native.glob("*.py"),
             ROOT / "setup.py", pathlib.Path(__file__).resolve()]
    return sorted(files)


def digest(sanitize: str = SANITIZERS) -> str:
    """What the sanitized build depends on, hashed."""
    h = hashlib.sha256()
    for path in _inputs():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    compiler = subprocess.run([CC, "--version"], capture_output=True, text=True, check=True)
    for part in (sanitize, compiler.stdout, sysconfig.get_config_var("SOABI") or "", CC):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def runtime_library(name: str) -> str:
    """The path of a sanitizer runtime (``libasan.so``, ``libtsan.so``) of the compiler, or
    raise FileNotFoundError: gcc prints the bare name back when it has no such file."""
    out = subprocess.run([CC, f"-print-file-name={name}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not os.path.isabs(out) or not os.path.exists(out):
        raise FileNotFoundError(f"{CC} has no {name} (Debian 12: apt-get install "
                                f"--no-install-recommends libasan8 libubsan1 libtsan2)")
    return os.path.realpath(out)


def build(sanitize: str = SANITIZERS) -> pathlib.Path:
    """The directory holding ``streamcore/<module>*.so`` built with ``-fsanitize=<sanitize>``."""
    final = CACHE / digest(sanitize)
    if (final / "complete").exists():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="tmp-", dir=CACHE))
    try:
        # A child process: build.py reads STREAMCORE_SANITIZE when it is imported, and the
        # sources it lists are relative to the repository root.
        env = dict(os.environ, STREAMCORE_SANITIZE=sanitize)
        proc = subprocess.run([sys.executable, __file__, "--compile", str(work)], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sanitized build failed ({proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        (work / "complete").write_text(sanitize + "\n")
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in CACHE.iterdir():  # earlier builds of older sources
        if old != final and not old.name.startswith("tmp-"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def extension_files(built: pathlib.Path) -> list[pathlib.Path]:
    """The sanitized extension modules of a build() directory (streamcore/*.so)."""
    return sorted((built / "streamcore").glob("*.so"))


def assemble(built: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """A tree at ``dest`` with streamcore/ (the sanitized .so files instead of the installed
    ones), tests/ and pyproject.toml; returns ``dest``."""
    skip = shutil.ignore_patterns("*.so", "*.c", "__pycache__", ".pytest_cache", ".hypothesis")
    shutil.copytree(ROOT / "streamcore", dest / "streamcore", ignore=skip)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=skip)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for so in extension_files(built):
        shutil.copy2(so, dest / "streamcore" / so.name)
    return dest


def _compile(outdir: str) -> None:
    """In the child (cwd ROOT, STREAMCORE_SANITIZE set): compile each cffi module into outdir."""
    # cffi's compile() runs the compiler in outdir, and build.py names its sources relative to
    # the repository root (native/x.c): a copy of native/ there resolves them, and keeps the
    # object files out of the source tree.
    shutil.copytree(ROOT / "native", pathlib.Path(outdir) / "native",
                    ignore=shutil.ignore_patterns("__pycache__"))
    scripts: dict[str, object] = {}
    for entry in cffi_modules():
        path, attr = entry.rsplit(":", 1)
        if path not in scripts:
            spec = importlib.util.spec_from_file_location(f"_sanitize_{len(scripts)}", ROOT / path)
            assert spec is not None and spec.loader is not None
            scripts[path] = module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        getattr(scripts[path], attr).compile(tmpdir=outdir, verbose=False)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compile"]:
        _compile(sys.argv[2])
    else:
        print(build(sys.argv[1] if len(sys.argv) > 1 else SANITIZERS))
