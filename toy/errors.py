"""One error type for every bad input, so callers (CLI, app) can show a single clear line."""

from __future__ import annotations

import math


class ToyError(ValueError):
    """A user-facing error: the message names the parameter and what is allowed."""


class NonFiniteError(ToyError):
    """A sampler state became NaN or infinite."""


class CheckpointError(ToyError):
    """A checkpoint file is corrupt, truncated or belongs to another configuration."""


def check_finite(name: str, value: float, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Return `value` as a float, or raise ToyError naming `name` and the allowed range."""
    lo_br, hi_br = ("(" if low_open else "["), (")" if high_open else "]")
    rng = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ToyError(f"{name} must be a number in {rng}, got {value!r}") from None
    bad = not math.isfinite(v)
    if low is not None and (v < low or (low_open and v == low)):
        bad = True
    if high is not None and (v > high or (high_open and v == high)):
        bad = True
    if bad:
        raise ToyError(f"{name} must be a finite number in {rng}, got {value!r}")
    return v


def check_int(name: str, value: int, *, low: int | None = None, high: int | None = None) -> int:
    """Return `value` as an int, or raise ToyError naming `name` and the allowed range."""
    rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    try:
        v = int(value)
        if v != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ToyError(f"{name} must be an integer in {rng}, got {value!r}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise ToyError(f"{name} must be an integer in {rng}, got {value!r}")
    return v
