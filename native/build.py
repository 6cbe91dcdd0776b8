"""cffi build script for streamcore._native (API mode, out of line).

setuptools runs it through ``cffi_modules`` (see setup.py), so ``pip install .`` and
``pip install -e .`` compile every ``native/*.c`` into one extension module.  The same header
is given to ``cdef()`` and ``#include``d by the generated C, so the two cannot drift apart.
"""

from __future__ import annotations

import pathlib
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
LIBRARIES = ["pthread", "rt"]

ffibuilder = cffi.FFI()
ffibuilder.cdef(_HEADER.read_text())

_sources = sorted(str(p.relative_to(_HERE.parent)) for p in _HERE.glob("*.c"))
ffibuilder.set_source(
    "streamcore._native",
    '#include <stdint.h>\n#include "streamcore.h"\n',
    sources=_sources,
    include_dirs=[str(_HERE)],
    extra_compile_args=CFLAGS,
    libraries=LIBRARIES,
    # A C string literal: the flags as the module reports them at run time.
    define_macros=[("SC_BUILD_FLAGS", '"' + shlex.join(CFLAGS).replace('"', r"\"") + '"')],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
