"""Files a user gets back: checked before any work, written atomically.

`writable_file` and `usable_folder` make sure an output can be written *before* the training or
sampling that produces it (a folder is created, then a probe file is written and removed), so a
mistyped path never costs the results. `atomic_write` writes to a temporary file in the same folder
and renames it over the target, so a kill never leaves half a file (checkpoints, JSON, tables).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

from toy.errors import ToyError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def usable_folder(path: str | Path, name: str) -> Path:
    """Create the folder `path` if needed and check that files can be written in it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ToyError(f"{name} {str(p)!r} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ToyError(f"{name} {str(p)!r} cannot be written: {_why(e)}") from None
    return p


def writable_file(path: str | Path, name: str) -> Path:
    """Check that the file `path` can be written (its folder is created); nothing is left behind."""
    p = Path(path)
    if p.is_dir():
        raise ToyError(f"{name} must be a file path, {str(p)!r} is a folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise ToyError(f"{name} {str(p)!r} cannot be written: permission denied")
    usable_folder(p.parent if str(p.parent) else ".", f"the folder of {name}")
    return p


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """write(f) into a temporary file beside `path`, flushed to disk, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)        # as an ordinary open() would have made it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def finite_json(obj):
    """obj with every non-finite float replaced by None (JSON has no NaN) and NumPy scalars as numbers."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj, indent: int = 1) -> None:
    write_text(path, json.dumps(finite_json(obj), indent=indent, allow_nan=False) + "\n")
