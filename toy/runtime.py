"""Where the simulator keeps what it makes once (trained networks, compiled programs), and how it uses the CPU.

`cache_dir()` is `$TOY_CACHE_DIR`, else `~/.cache/s2-toy`. `enable_compilation_cache()` points JAX's
persistent compilation cache at `cache_dir()/xla`, so a second launch of the app (or any command)
loads its compiled samplers instead of compiling them again; an explicit JAX_COMPILATION_CACHE_DIR
wins. Call it before the first jitted call.

`setup()` is how a program chooses how it uses the CPU; importing `toy` changes nothing in JAX. The
command line, the app, the figure script, the bench, the notebooks and the test suite call it first:
it makes one JAX CPU device per core (`split_cpu_cores`), and `rows_mesh(n)` then says over which
devices a sampler run of n rows splits its rows. A program that embeds `toy` in its own JAX code and
never calls `setup()` keeps JAX's own devices, and sampling stays on one of them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax
import numpy as np

# Rows per device below which a sampler run stays on one device (its small products gain nothing).
MIN_ROWS_PER_DEVICE = 256


def setup() -> bool:
    """Prepare this process's JAX for the simulator, before JAX starts: one CPU device per core (two at
    most; `split_cpu_cores`). Safe to call more than once; returns whether the CPU is split."""
    split_cpu_cores()
    return jax.config.jax_num_cpu_devices >= 2


def split_cpu_cores() -> bool:
    """Give JAX one CPU device per core (two at most; `TOY_CPU_DEVICES=N` asks for N, 1 turns it off),
    so that a sampler run can split its rows over them (`rows_mesh`). On two cores XLA keeps only about
    1.2 cores busy with the products of a 1,000-row pass, and both with two 500-row halves run side by
    side (docs/performance.md). Must run before JAX starts its backend: `toy/__init__.py` calls it.
    Does nothing where the user chose a device count (XLA's host-device flag, or JAX's
    `jax_num_cpu_devices`, set in the environment or by `jax.config.update`) or JAX already runs;
    returns whether it made the devices."""
    if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or jax.config.jax_num_cpu_devices != -1):         # -1: JAX's default, nobody chose a count
        return False
    asked = os.environ.get("TOY_CPU_DEVICES")
    want = min(2, os.cpu_count() or 1) if asked is None else (int(asked) if asked.strip().isdigit() else 0)
    if not 1 <= want <= 256:
        warnings.warn(f"TOY_CPU_DEVICES={asked!r} ignored: it must be an integer from 1 to 256 (1: one CPU "
                      f"device); the CPU stays one device", stacklevel=2)
        return False
    if want < 2:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", want)
    except RuntimeError:          # JAX's backend already started in this process: keep its devices
        return False
    return True


def data_devices() -> list:
    """The devices training splits its batch over: every local accelerator, or the CPU devices the
    user asked XLA for (`XLA_FLAGS=--xla_force_host_platform_device_count=N`). The CPU devices
    `setup` makes serve the sampler's rows only: training's large products already keep both cores
    busy, and its numbers stay those of one device."""
    devices = jax.local_devices()
    if devices[0].platform == "cpu" and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        return devices[:1]
    return devices


def rows_mesh(n: int, churn: bool = False) -> jax.sharding.Mesh | None:
    """The mesh a sampler run of n rows splits its rows over: every local CPU device when there are
    several, n divides evenly and each gets at least MIN_ROWS_PER_DEVICE rows; None (one device) else.
    Not with churn, whose noise is drawn at the whole batch's shape."""
    devices = jax.local_devices()
    k = len(devices)
    if churn or k < 2 or devices[0].platform != "cpu" or n % k or n // k < MIN_ROWS_PER_DEVICE:
        return None
    return jax.sharding.Mesh(np.asarray(devices), ("rows",))


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
