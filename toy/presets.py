"""The named mixtures (presets) and the reader of user mixtures (JSON), validated with clear errors.

`get_preset(name)` returns one object per preset per process (jitted samplers key their cache on it),
or reads a `.json` file; `parse_json` reads JSON text (the app's pasted mixture goes through it too).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from toy.errors import ToyError
from toy.files import read_bytes
from toy.mixtures import ConditionalMixture, GaussianMixture

# -- presets ----------------------------------------------------------------------------------

def _iso(d: int, std: float) -> np.ndarray:
    return np.eye(d) * std**2


def _gmm1d() -> ConditionalMixture:
    # The paper's 1D example: the target class is bimodal with modes at −4 and +4 (Fig. 3 top, Fig. 9);
    # a second class sits between them, so the unconditional density CFG extrapolates away from
    # overlaps the target's inner tails: that is what pushes CFG's modes outward.
    a = GaussianMixture([0.5, 0.5], [[-4.0], [4.0]], [_iso(1, 1.0), _iso(1, 1.0)])
    b = GaussianMixture([1.0], [[0.0]], [_iso(1, 1.5)])
    return ConditionalMixture((a, b), np.array([0.5, 0.5]), ("modes ±4", "centre"), "gmm1d")


def _gmm2d() -> ConditionalMixture:
    # The paper's 2D example: four isotropic modes at (±4, ±4); the classes split them diagonally.
    a = GaussianMixture([0.5, 0.5], [[4.0, 4.0], [-4.0, -4.0]], [_iso(2, 1.0)] * 2)
    b = GaussianMixture([0.5, 0.5], [[-4.0, 4.0], [4.0, -4.0]], [_iso(2, 1.0)] * 2)
    return ConditionalMixture((a, b), np.array([0.5, 0.5]), ("diagonal", "anti-diagonal"), "gmm2d")


def _gmm2d4() -> ConditionalMixture:
    # The paper's 4-mode example (B.1.3): the target class is four equal isotropic modes at (±4, ±4).
    # CFG needs a second class. A symmetric one (a blob at the centre) would push all four modes out
    # alike and could never show a preference; this one sits on the right, between (4, 4) and (4, −4),
    # so p(target | x) is lower around the right-hand modes and CFG's tilt p(x | c)·p(c | x)^(λ−1)
    # moves weight to the left-hand ones: the "mode preference" the paper names, made measurable.
    a = GaussianMixture([0.25] * 4, [[-4.0, -4.0], [-4.0, 4.0], [4.0, -4.0], [4.0, 4.0]], [_iso(2, 1.0)] * 4)
    b = GaussianMixture([1.0], [[4.0, 0.0]], [_iso(2, 2.0)])
    return ConditionalMixture((a, b), np.array([0.5, 0.5]), ("four modes", "right"), "gmm2d4")


def tree_branches(origin, angle, length, depth, spread, thickness, pieces=3):
    """Thin Gaussians along the segments of a recursive binary tree: (weights, means, covs)."""
    w, mu, cov = [], [], []
    stack = [(np.asarray(origin, float), angle, length, 0)]
    while stack:
        p, a, L, k = stack.pop()
        u = np.array([np.cos(a), np.sin(a)])
        R = np.stack([u, np.array([-u[1], u[0]])], axis=1)           # columns: along, across
        for j in range(pieces):
            mu.append(p + u * L * (j + 0.5) / pieces)
            cov.append(R @ np.diag([(L / pieces / 2) ** 2, (thickness * (0.8 ** k)) ** 2]) @ R.T)
            w.append(L / pieces)
        if k < depth:
            end = p + u * L
            stack += [(end, a + spread, L * 0.7, k + 1), (end, a - spread * 0.8, L * 0.7, k + 1)]
    return np.array(w), np.array(mu), np.array(cov)


def _tree2d() -> ConditionalMixture:
    # Thin anisotropic branches, like the fractal tree of the Autoguidance toy: two trees share a
    # trunk region and interleave, so classes overlap along thin structure where learned models blur.
    a = GaussianMixture(*tree_branches((0.0, -5.0), np.pi / 2 + 0.25, 4.0, 3, 0.55, 0.12))
    b = GaussianMixture(*tree_branches((0.0, -5.0), np.pi / 2 - 0.25, 4.0, 3, 0.45, 0.12))
    return ConditionalMixture((a, b), np.array([0.5, 0.5]), ("left tree", "right tree"), "tree2d")


# The app's starting custom mixture: two classes in 2D, one of two components, one correlated.
EXAMPLE_SPEC = {"classes": [{"weights": [1, 1], "means": [[-3, 0], [3, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 2]]]},
                            {"weights": [1], "means": [[0, 2]], "covs": [[[1, 0.3], [0.3, 1]]]}],
                "class_names": ["pair", "single"]}
PRESETS = {"gmm1d": _gmm1d, "gmm2d": _gmm2d, "gmm2d4": _gmm2d4, "tree2d": _tree2d}


@functools.lru_cache(maxsize=None)
def _cached_preset(name: str) -> ConditionalMixture:
    # One object per preset per process: jitted samplers key their cache on the mixture's identity.
    return PRESETS[name]()


def get_preset(name: str) -> ConditionalMixture:
    """A named preset, or a user mixture from a JSON file path (see `load_json`)."""
    if name in PRESETS:
        return _cached_preset(name)
    if str(name).endswith(".json"):
        return load_json(name)
    raise ToyError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} or a path to a .json file")


def from_dict(spec: dict, name: str = "custom") -> ConditionalMixture:
    """Build a validated ConditionalMixture from a plain dict.

    Format: {"classes": [{"weights": [K], "means": [[d]...], "covs": [[[d, d]]...]}, ...],
             "class_weights": [C] (optional, default equal), "class_names": [C] (optional)}.
    In 1D, means may be [K] and covs [K] (variances).
    """
    if not isinstance(spec, dict) or "classes" not in spec:
        raise ToyError('a mixture spec must be a JSON object with a "classes" list')
    classes = spec["classes"]
    if not isinstance(classes, list) or not classes:
        raise ToyError('"classes" must be a non-empty list of {"weights", "means", "covs"} objects')
    mixtures = []
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or not {"weights", "means", "covs"} <= set(c):
            raise ToyError(f'class {i} must be an object with "weights", "means" and "covs"')
        try:
            mixtures.append(GaussianMixture(c["weights"], c["means"], c["covs"]))
        except ToyError as e:
            raise ToyError(f"class {i}: {str(e).removeprefix('mixture: ')}") from None
    cw = spec.get("class_weights", [1.0] * len(mixtures))
    names = spec.get("class_names", [f"class {i}" for i in range(len(mixtures))])
    if not isinstance(names, list) or len(names) != len(mixtures):
        raise ToyError(f'"class_names" must list {len(mixtures)} names')
    try:
        cw = np.asarray(cw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ToyError('"class_weights" must be a list of numbers > 0') from None
    return ConditionalMixture(tuple(mixtures), cw, tuple(str(n) for n in names), str(spec.get("name", name)))


MAX_SPEC_BYTES = 10_000_000      # a mixture spec is a few numbers per component


def parse_json(text: str | bytes, source: str = "the custom mixture", name: str = "custom") -> ConditionalMixture:
    """A user mixture from JSON text (format in `from_dict`): every decoding, nesting, type and value
    problem is one ToyError that names `source` and what is wrong (the command line and the app both
    read mixtures through here)."""
    if len(text) > MAX_SPEC_BYTES:
        raise ToyError(f"{source} is {len(text):,} bytes; a mixture spec is at most {MAX_SPEC_BYTES:,}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ToyError(f"{source} is not UTF-8 text (byte {e.start} cannot be decoded)") from None
    try:
        spec = json.loads(text)
        json.dumps(spec, ensure_ascii=False).encode("utf-8")    # a lone surrogate (raw or as "\\ud800") is no text
    except json.JSONDecodeError as e:
        raise ToyError(f"{source} is not valid JSON: {e}") from None
    except RecursionError:
        raise ToyError(f"{source} nests too deeply to be a mixture spec") from None
    except UnicodeEncodeError:
        raise ToyError(f"{source} holds a character that is not valid text (a lone surrogate)") from None
    except ValueError as e:          # Python's limit on digits in an integer, and the like
        raise ToyError(f"{source} is not a usable mixture spec: {str(e).split('; ')[0][:120]}") from None
    try:
        return from_dict(spec, name=name)
    except RecursionError:
        raise ToyError(f"{source} nests too deeply to be a mixture spec") from None
    except ToyError as e:
        raise ToyError(f"{source}: {e}") from None


def load_json(path: str | Path) -> ConditionalMixture:
    """A user mixture from a JSON file (format in `from_dict`), validated with clear errors."""
    p = Path(path)
    data = read_bytes(p, "mixture file", MAX_SPEC_BYTES)       # a regular file, bounded: no FIFO, no /dev/zero
    return parse_json(data, f"mixture file {str(p)!r}", p.stem)


__all__ = ["PRESETS", "get_preset", "from_dict", "parse_json", "load_json", "tree_branches"]
