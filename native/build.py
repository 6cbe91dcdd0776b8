"""cffi build script for streamcore._native and streamcore._testing (API mode, out of line).

setuptools runs it through ``cffi_modules`` (see setup.py), so ``pip install .`` and
``pip install -e .`` compile every ``native/*.c`` into ``streamcore._native`` (the shipped
contract, ``native/streamcore.h``) and the test and benchmark drivers in ``native/testing/``
into ``streamcore._testing`` (its own header, ``native/testing/testing.h``).  Each header is
given to ``cdef()`` and ``#include``d by the generated C, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex

import cffi

_HERE = pathlib.Path(__file__).resolve().parent
_HEADER = _HERE / "streamcore.h"

# Warnings are bugs in the native core: -Werror keeps a new one from landing unnoticed.
# -Wno-unused-parameter: cffi's generated wrappers leave parameters unused; our own code is
# checked for them by -Wextra in the sources' own compile (they are part of the same unit,
# so the exemption is global; keep parameters used in native/*.c by review).
CFLAGS = [
    "-std=gnu11",
    "-O3",  # the mix kernel's loops are written for the vectoriser (native/mixer.c)
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-fno-strict-aliasing",
    "-pthread",
]
LIBRARIES = ["pthread", "rt", "dl"]

# STREAMCORE_SANITIZE=address,undefined builds a sanitizer variant (tests/sanitize.py builds it
# into its own directory for tests/test_sanitizers.py; never install it).  -O1 keeps reports
# readable, frame pointers keep their stacks whole, and UBSan stops at its first report instead
# of printing and going on, so a test sees it.  Unset (the normal build): nothing changes.
SANITIZE = os.environ.get("STREAMCORE_SANITIZE", "").strip()
LINK_ARGS: list[str] = []
if SANITIZE:
    if not re.fullmatch(r"[a-z-]+(,[a-z-]+)*", SANITIZE):
        raise ValueError(f"STREAMCORE_SANITIZE={SANITIZE!r}: expected e.g. address,undefined")
    LINK_ARGS = [f"-fsanitize={SANITIZE}"]
    CFLAGS = [f for f in CFLAGS if not f.startswith("-O")] + [
        "-O1",
        *LINK_ARGS,
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=undefined",
        # Python's own CFLAGS (sysconfig) add -fwrapv, which defines signed overflow and so
        # turns UBSan's check for it off; the core is plain C and must not rely on it.
        "-fno-wrapv",
    ]

_FLAGS_MACRO = ("SC_BUILD_FLAGS", '"' + shlex.join(CFLAGS).replace('"', r"\"") + '"')
_TESTING = _HERE / "testing"


def _sources(*paths: pathlib.Path) -> list[str]:
    return [str(p.relative_to(_HERE.parent)) for p in paths]


ffibuilder = cffi.FFI()
ffibuilder.cdef(_HEADER.read_text())
ffibuilder.set_source(
    "streamcore._native",
    '#include <stdint.h>\n#include "streamcore.h"\n',
    sources=_sources(*sorted(_HERE.glob("*.c"))),
    include_dirs=[str(_HERE)],
    extra_compile_args=CFLAGS,
    libraries=LIBRARIES,
    extra_link_args=LINK_ARGS,
    # A C string literal: the flags as the module reports them at run time.
    define_macros=[_FLAGS_MACRO],
)

# The drivers get their own copies of the ring and the realtime primitives they run on.
testing_builder = cffi.FFI()
testing_builder.cdef((_TESTING / "testing.h").read_text())
testing_builder.set_source(
    "streamcore._testing",
    '#include <stdint.h>\n#include "streamcore.h"\n#include "testing.h"\n',
    sources=_sources(*sorted(_TESTING.glob("*.c")), _HERE / "ring.c", _HERE / "rt.c"),
    include_dirs=[str(_HERE), str(_TESTING)],
    extra_compile_args=CFLAGS,
    libraries=LIBRARIES,
    extra_link_args=LINK_ARGS,
)

#: Every module this script builds (the sanitizer test builds them all again).
BUILDERS = [ffibuilder, testing_builder]

if __name__ == "__main__":
    for builder in BUILDERS:
        builder.compile(verbose=True)
