"""Guidance methods from outside the package: Python files that call `toy.guidance.register`.

`load(path)` imports one file (it is the user's own code, run as any script of theirs would be) and
returns the names of the methods it registered; `load_all(paths)` loads several; `from_env()` reads
the files named in `TOY_PLUGINS` (separated by ':'), as the app does. A file that cannot be read or
imported, that registers nothing, declares a method or setting twice, shadows a built-in, or
declares a setting without a range is one ToyError naming the file, and leaves nothing registered.
Loading the same file again is a no-op. docs/extending.md shows how to write one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from toy.errors import ToyError
from toy.guidance import REGISTRY, unregister

ENV = "TOY_PLUGINS"
_LOADED: dict[Path, tuple[str, ...]] = {}          # resolved path → the methods it registered


def load(path: str | Path) -> tuple[str, ...]:
    """Import a plugin file; returns the names of the methods it registered."""
    p = Path(path)
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ToyError(f"--plugin {str(p)!r}: no such file") from None
    if real in _LOADED:
        return _LOADED[real]
    if not real.is_file() or real.suffix != ".py":
        raise ToyError(f"--plugin {str(p)!r}: a plugin is a regular Python file ending in .py")
    before = list(REGISTRY)
    name = f"toy_plugin_{real.stem}_{hashlib.sha1(str(real).encode()).hexdigest()[:8]}"
    try:
        spec = importlib.util.spec_from_file_location(name, real)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except ToyError as e:
        _roll_back(before, name)
        raise ToyError(f"plugin {str(p)!r}: {e}") from None
    except BaseException as e:  # noqa: BLE001 - a user's file may raise anything while importing
        _roll_back(before, name)
        if isinstance(e, KeyboardInterrupt):
            raise
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        raise ToyError(f"plugin {str(p)!r} failed to import{where}: {type(e).__name__}: {e}") from None
    added = tuple(m for m in REGISTRY if m not in before)
    if not added:
        _roll_back(before, name)
        raise ToyError(f"plugin {str(p)!r} registers no guidance method (decorate a function with "
                       f"toy.guidance.register)")
    _LOADED[real] = added
    return added


def _roll_back(before: list[str], module: str) -> None:
    for m in [m for m in REGISTRY if m not in before]:
        unregister(m)
    sys.modules.pop(module, None)


def load_all(paths) -> tuple[str, ...]:
    """Load every file of `paths` (None or empty: none); returns the methods they registered."""
    names: list[str] = []
    for p in paths or ():
        names += [n for n in load(p) if n not in names]
    return tuple(names)


def from_env() -> tuple[str, ...]:
    """Load the files named in $TOY_PLUGINS (FILE1:FILE2); returns the methods they registered."""
    text = os.environ.get(ENV, "")
    return load_all([p for p in text.split(os.pathsep) if p.strip()])


def unload_all() -> None:
    """Forget every plugin method and setting (a test's clean-up; a program simply ends)."""
    for paths_methods in list(_LOADED.values()):
        for m in paths_methods:
            if m in REGISTRY:
                unregister(m)
    _LOADED.clear()
