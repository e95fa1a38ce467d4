"""Safe checkpoints: plain arrays in an .npz (never pickle), config inside, written atomically.

A checkpoint holds named pytrees (e.g. "params", "ema", "opt") flattened to arrays keyed by their
path, plus a JSON header with the config and free metadata. Loading needs a template pytree of the
same structure, so nothing in the file decides what objects get built.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from toy.errors import CheckpointError, ToyError
from toy.files import atomic_write, regular_file

_HEADER = "__header__"
FORMAT = "toy-checkpoint-v1"


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in leaves:
        arr = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
        out[jax.tree_util.keystr(path)] = arr
    return out


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save(path: str | Path, trees: dict[str, Any], config: dict, meta: dict | None = None) -> None:
    """Write `trees` and `config` to `path` atomically: a temp file in the same folder, fsync, rename."""
    path = Path(path)
    arrays = {}
    for name, tree in trees.items():
        for key, arr in _flatten(tree).items():
            arrays[f"{name}/{key}"] = arr
    header = json.dumps({"format": FORMAT, "config": config, "meta": meta or {}, "trees": sorted(trees)})
    arrays[_HEADER] = np.frombuffer(header.encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


MAX_BYTES = 4 << 30          # a checkpoint is read only if it is a regular file of at most this size


def _check_file(path: Path) -> None:
    """A checkpoint is a regular file (links followed) of at most MAX_BYTES: never a FIFO or a device."""
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        regular_file(path, "checkpoint", MAX_BYTES)
    except ToyError as e:
        raise CheckpointError(f"{e}; delete it to retrain") from None


def _open(path: Path):
    """np.load of a checkpoint, which must be an .npz archive (a plain .npy array is not one)."""
    z = np.load(path, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    return z


def read_header(path: str | Path) -> dict:
    """The JSON header (format, config, meta) of a checkpoint, with clear errors for bad files."""
    path = Path(path)
    _check_file(path)
    try:
        with _open(path) as z:
            header = json.loads(bytes(z[_HEADER]).decode())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, json.JSONDecodeError,
            UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a toy checkpoint ({type(e).__name__}); "
                              f"delete it to retrain") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a {FORMAT} file; delete it to retrain")
    for field in ("config", "meta"):
        if not isinstance(header.get(field), dict):
            raise CheckpointError(f"checkpoint {str(path)!r} has no {field!r} in its header; delete it to retrain")
    return header


def load(path: str | Path, templates: dict[str, Any], config: dict | None = None) -> tuple[dict[str, Any], dict]:
    """Read the trees named in `templates` back into their structures; return (trees, header).

    If `config` is given it must equal the stored one, else CheckpointError says which keys differ.
    """
    path = Path(path)
    header = read_header(path)
    if config is not None and header["config"] != config:
        stored = header["config"]
        diff = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        raise CheckpointError(f"checkpoint {str(path)!r} was made with another configuration (differs in: "
                              f"{', '.join(diff)}); delete it or choose a different cache folder")
    out = {}
    try:
        with _open(path) as z:
            for name, template in templates.items():
                paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
                leaves = []
                for p, ref in paths_leaves:
                    key = f"{name}/{jax.tree_util.keystr(p)}"
                    if key not in z.files:
                        raise CheckpointError(f"checkpoint {str(path)!r} lacks {key}; it belongs to another model "
                                              f"structure; delete it to retrain")
                    arr = z[key]
                    if _is_key(ref):
                        leaves.append(jax.random.wrap_key_data(arr))
                        continue
                    if arr.shape != np.shape(ref):
                        raise CheckpointError(f"checkpoint {str(path)!r}: {key} has shape {arr.shape}, expected "
                                              f"{np.shape(ref)}; delete it to retrain")
                    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                        raise CheckpointError(f"checkpoint {str(path)!r}: {key} holds NaN or infinite values; "
                                              f"delete it to retrain")
                    leaves.append(jax.numpy.asarray(arr, dtype=getattr(ref, "dtype", arr.dtype)))
                out[name] = jax.tree_util.tree_unflatten(treedef, leaves)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({type(e).__name__}); delete it to "
                              f"retrain") from None
    return out, header
