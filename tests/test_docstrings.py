"""Every public name has a numpydoc docstring (issue 7): a summary, Parameters that match the
signature, and a Raises section wherever the code itself raises.

"Public" is every name of ``streamcore.__all__`` and, for its classes, every method, property
and classmethod whose name does not start with ``_`` and that streamcore defines (members
inherited from built-ins such as ``Exception.with_traceback`` are not ours to document).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from numpydoc.docscrape import NumpyDocString

import streamcore


def _own(obj: Any) -> bool:
    """True for what streamcore defines (not built-ins, numpy or the standard library)."""
    module = getattr(obj, "__module__", None) or ""
    return module == "streamcore" or module.startswith("streamcore.")


def _members(cls: type) -> Iterator[tuple[str, Any, Callable[..., Any] | None]]:
    """(qualified name, the raw attribute, the function whose code to read) for each public
    method, property and classmethod of ``cls`` that a streamcore class defines."""
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not _own(owner):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, property):
            yield f"{owner.__name__}.{name}", raw, raw.fget
        elif isinstance(raw, classmethod | staticmethod):
            yield f"{owner.__name__}.{name}", raw, raw.__func__
        elif inspect.isfunction(raw):
            yield f"{owner.__name__}.{name}", raw, raw
        # anything else is data (dataclass fields, ``name = 'device'``): no docstring of its own


def _public() -> list[tuple[str, Any, Callable[..., Any] | None, list[Callable[..., Any]]]]:
    """(name, object whose docstring is checked, the callable whose signature it documents,
    the functions whose ``raise`` statements it must declare)."""
    found: dict[str, Any] = {}
    for name in streamcore.__all__:
        obj = getattr(streamcore, name)
        if inspect.isclass(obj):
            init = [vars(obj)[f] for f in ("__init__", "__post_init__") if f in vars(obj)]
            found[name] = (name, obj, obj, init)
            for qualname, raw, func in _members(obj):
                signed = None if isinstance(raw, property) else func
                bodies = [f for f in (func, getattr(raw, "fset", None)) if f is not None]
                found.setdefault(qualname, (qualname, raw, signed, bodies))
        elif callable(obj):
            found[name] = (name, obj, obj, [obj])
        # __version__ is a string: nothing to document
    return sorted(found.values(), key=lambda entry: entry[0])


PUBLIC = _public()


def _doc(obj: Any) -> NumpyDocString:
    text = obj.__doc__  # the object's own docstring, never one inherited through getdoc()
    assert text and text.strip(), "no docstring"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpydoc warns about unknown sections: fail on them
        return NumpyDocString(inspect.cleandoc(text))


def _parameters(func: Callable[..., Any]) -> list[str] | None:
    """The names a Parameters section must list, or None when there is no signature to read
    (exception classes that take the built-in's message)."""
    try:
        signature = inspect.signature(func)
    except ValueError:
        return None
    names = []
    for p in signature.parameters.values():
        if p.name in ("self", "cls"):
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def _raised(func: Callable[..., Any]) -> set[str]:
    """Names of the exception classes ``func``'s own body raises as ``raise X(...)``."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            target = node.exc.func
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return names


def _listed(section: list[Any]) -> set[str]:
    """Every name a Parameters or Raises section lists (``a, b : int`` lists two)."""
    out = set()
    for entry in section:
        for part in (entry.name or entry.type).split(","):
            out.add(part.strip())
    return out


@pytest.mark.parametrize(("name", "obj", "signed", "bodies"), PUBLIC,
                         ids=[entry[0] for entry in PUBLIC])
class TestPublicDocstrings:
    """Each public name's docstring parses as numpydoc and says what its code does."""

    def test_summary(self, name: str, obj: Any, signed: Any, bodies: list[Any]) -> None:
        """A one-line summary opens the docstring."""
        doc = _doc(obj)
        assert doc["Summary"], f"{name}: no summary line"
        assert len(doc["Summary"]) == 1, f"{name}: the summary is not one line"

    def test_parameters_match_signature(self, name: str, obj: Any, signed: Any,
                                        bodies: list[Any]) -> None:
        """Parameters lists exactly the signature's parameters, in any order."""
        wanted = None if signed is None else _parameters(signed)
        doc = _doc(obj)
        listed = _listed(doc["Parameters"])
        if not wanted:
            assert not listed, f"{name}: documents parameters it does not take: {listed}"
            return
        assert listed == set(wanted), (
            f"{name}: Parameters lists {sorted(listed)}, the signature has {wanted}")

    def test_raises_declared(self, name: str, obj: Any, signed: Any,
                             bodies: list[Any]) -> None:
        """Every exception class the code raises itself is named in Raises."""
        raised = set().union(*(_raised(body) for body in bodies)) if bodies else set()
        if not raised:
            return
        doc = _doc(obj)
        assert doc["Raises"], f"{name}: raises {sorted(raised)} but has no Raises section"
        missing = raised - _listed(doc["Raises"])
        assert not missing, f"{name}: raises {sorted(missing)} without saying so in Raises"


class TestTheWalk:
    """The walk above reaches what it must, so a pass means something."""

    def test_reaches_methods_properties_and_classmethods(self) -> None:
        """Methods, properties, classmethods and functions of __all__ are all walked."""
        names = {entry[0] for entry in PUBLIC}
        for expected in ("Engine", "Engine.play", "Engine.closed", "Ring.attach", "Ring.dtype",
                         "Scheduling.realtime", "Sink.output_format", "Voice.gain", "play",
                         "acquire_realtime", "NativeError"):
            assert expected in names

    def test_raise_scan_sees_raises(self) -> None:
        """The AST scan finds the raises of a function known to raise."""
        assert {"RingFormatError", "RingCorruptedError"} <= _raised(streamcore.Ring.attach.__func__)

    def test_a_bad_docstring_fails(self) -> None:
        """A docstring without a Parameters section for a parameter is caught."""

        def sample(frames: int) -> None:
            """Do something."""

        assert _parameters(sample) == ["frames"]
        assert _listed(_doc(sample)["Parameters"]) == set()
