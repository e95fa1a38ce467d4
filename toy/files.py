"""Files a user gives and gets back: read only when regular and bounded, checked before any work,
written atomically, and never lost.

Reading: `regular_file` accepts only a regular file (after following links) of at most a stated size,
so a FIFO, a device (`/dev/zero` behind a link), a socket or a folder is one error naming the path,
never a hang or an unbounded read; `read_bytes` reads such a file and stops at the cap.

Writing: `writable_file` and `usable_folder` make sure an output can be written *before* the training
or sampling that produces it: the folder is created and probed, the target is a regular file or a
new path (a FIFO, device or folder is refused; a symbolic link is followed and its target written),
the temporary name the atomic write uses fits the file system, and the disk has room for a stated
estimate. `atomic_write` writes to that temporary file and renames it over the target, so a kill
never leaves half a file. `write_json_safely` keeps the results when the write still fails at the
end (the disk filled meanwhile): it saves them beside, in the temporary folder, or prints them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, IO

from toy.errors import ToyError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


TMP_SUFFIX = 8 + len(".tmp") + 1       # what atomic_write's temporary name adds to the target's: "." + 8 + ".tmp"
MIN_FREE = 16 << 20                    # free bytes an output folder must have, at least (a JSON table is kilobytes)


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def regular_file(path: str | Path, name: str, cap: int) -> Path:
    """`path` if it is a regular file (links followed) of at most `cap` bytes, else one ToyError."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise ToyError(f"cannot read {name} {str(p)!r}: {_why(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ToyError(f"{name} {str(p)!r} is a {_kind(st.st_mode)}, not a regular file")
    if st.st_size > cap:
        raise ToyError(f"{name} {str(p)!r} is {st.st_size:,} bytes; at most {cap:,} are read")
    return p


def read_bytes(path: str | Path, name: str, cap: int) -> bytes:
    """The bytes of a regular file of at most `cap` bytes (checked before and while reading)."""
    p = regular_file(path, name, cap)
    try:
        with open(p, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise ToyError(f"cannot read {name} {str(p)!r}: {_why(e)}") from None
    if len(data) > cap:
        raise ToyError(f"{name} {str(p)!r} holds more than {cap:,} bytes; refused")
    return data


def check_space(folder: str | Path, need: int, name: str) -> None:
    """One ToyError when `folder`'s file system has less than `need` bytes free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return                       # unknown: the write itself will tell
    if free < need:
        raise ToyError(f"{name}: {str(folder)!r} has {free / 2**20:.1f} MiB free; at least {need / 2**20:.0f} MiB "
                       f"are needed")


def usable_folder(path: str | Path, name: str, need: int = MIN_FREE) -> Path:
    """Create the folder `path` if needed, check that files can be written in it and that it has
    `need` bytes free."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise ToyError(f"{name} {str(p)!r} is a {'file' if p.is_file() else _kind(os.stat(p).st_mode)}, "
                           f"not a folder")
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ToyError(f"{name} {str(p)!r} cannot be written: {_why(e)}") from None
    check_space(p, need, name)
    return p


def output_path(path: str | Path) -> Path:
    """Where a write to `path` lands: a symbolic link's target (links are followed), else `path`."""
    p = Path(path)
    return p.resolve() if p.is_symlink() else p


def writable_file(path: str | Path, name: str, need: int = MIN_FREE) -> Path:
    """Check that the file `path` can be written, before any work: a regular file or a new path (a
    link is followed), a name whose temporary twin fits the file system, a writable folder with room.
    Nothing is left behind; returns where the write will land."""
    try:
        p = output_path(path)
        if p.exists() and not p.is_file():
            raise ToyError(f"{name} {str(path)!r} is a {_kind(os.stat(p).st_mode)}: an output must be a regular file "
                           f"or a new path")
        if p.exists() and not os.access(p, os.W_OK):
            raise ToyError(f"{name} {str(path)!r} cannot be written: permission denied")
        folder = p.parent if str(p.parent) else Path(".")
        try:
            limit = os.pathconf(folder if folder.exists() else ".", "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        if len(p.name.encode()) + TMP_SUFFIX > limit:
            raise ToyError(f"{name}: the file name is {len(p.name.encode())} bytes; at most {limit - TMP_SUFFIX} fit "
                           f"(the atomic write adds {TMP_SUFFIX} for its temporary file)")
    except OSError as e:
        raise ToyError(f"{name} {str(path)[:80]!r} cannot be written: {_why(e)}") from None
    usable_folder(folder, f"the folder of {name}", need)
    return p


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """write(f) into a temporary file beside `path`, flushed to disk, then renamed over `path` (over a
    link's target: links are followed)."""
    path = output_path(path)
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


def write_json_safely(path: str | Path, obj, name: str) -> bool:
    """write_json, and when it fails after the work (the disk filled meanwhile) the results are not
    lost: saved in the temporary folder, or printed, with one `error:` line saying where. Returns
    whether `path` was written."""
    try:
        write_json(path, obj)
        return True
    except OSError as e:
        why = _why(e)
    rescue = Path(tempfile.gettempdir()) / f"s2-toy-unsaved-{os.getpid()}-{Path(path).name[:100]}"
    try:
        write_json(rescue, obj)
        where = f"the results are saved in {str(rescue)!r}"
    except OSError:
        print(json.dumps(finite_json(obj), indent=1, allow_nan=False))
        where = "the results are printed above"
    print(f"error: {name} {str(path)!r} could not be written ({why}); {where}", file=sys.stderr)
    return False
