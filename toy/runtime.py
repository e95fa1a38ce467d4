"""Where the simulator keeps what it makes once: trained networks and compiled programs.

`cache_dir()` is `$TOY_CACHE_DIR`, else `~/.cache/s2-toy`. `enable_compilation_cache()` points JAX's
persistent compilation cache at `cache_dir()/xla`, so a second launch of the app (or any command)
loads its compiled samplers instead of compiling them again; an explicit JAX_COMPILATION_CACHE_DIR
wins. Call it before the first jitted call.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def draw_size(n: int, low: int) -> int:
    """The size a random draw of n rows is made at: the next power of two, at least `low`.

    JAX's threefry is counter-based, so the first n rows of a larger draw are the draw of n rows: made
    at this size and cut, one small compiled program serves every n of a bucket (a program per n cost
    0.4-1 s of compile each)."""
    return max(int(low), 1 << max(int(n) - 1, 0).bit_length())


def cache_dir() -> Path:
    return Path(os.environ.get("TOY_CACHE_DIR", Path.home() / ".cache" / "s2-toy"))


def enable_compilation_cache(min_compile_s: float = 0.2) -> Path | None:
    """Turn on the persistent XLA compilation cache under cache_dir()/xla; returns its folder (None
    when it cannot be created, which only costs compile time)."""
    folder = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir() / "xla")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
