"""Streamlit app: λ and ω sliders over every guidance method, against the exact ground truth, with the
sampler in time and the S² mechanism on screen.

Run with `streamlit run app.py`. UI only: sampling, scoring, drawing and the mechanism all come from
the `toy` package (toy.evaluation, toy.plotting, toy.mechanism, the method registry of toy.guidance).
Every setting is mirrored in the URL, so a reload or a shared link reproduces the view.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import jax
import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator
from PIL import Image

from toy import evaluation as E
from toy import plotting as P
from toy.compare import MODELS, WEAK_MODELS
from toy.diffusion import SamplerConfig, initial_noise
from toy.errors import ToyError
from toy.guidance import EXACT_METHODS, METHODS, REGISTRY, GuidanceConfig, label
from toy.mechanism import decompose_states, guidance_terms
from toy.metrics import METRICS
from toy.mixtures import PRESETS, get_preset, parse_json
from toy.nets import ExactDenoiser
from toy.runtime import enable_compilation_cache
from toy.train import model_set_configs, train_models

# Every program, however small, goes to the persistent cache (min_compile_s=0): a second launch loads
# them all instead of compiling any (with the default, those under 0.2 s were compiled at every launch).
enable_compilation_cache(min_compile_s=0.0)

EXAMPLE = {"classes": [{"weights": [1, 1], "means": [[-3, 0], [3, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 2]]]},
                       {"weights": [1], "means": [[0, 2]], "covs": [[[1, 0.3], [0.3, 1]]]}],
           "class_names": ["pair", "single"]}
SOURCES = {"trained network": "trained", "exact closed form": "exact"}
TRAJ_N = 40          # trajectories drawn per method
MECH_MASKS = 8       # masks per σ in the mechanism view
MECH_STATES = 200    # CFG sampler states per σ for α, β, cos_error
SAMPLE_SIZES = [200, 500, 1000, 2000, 5000, 10000, 20000]
_DROPPABLE = model_set_configs("gmm2d", quick=True)["main"].num_blocks - 1      # block 0 is never dropped

# Every widget's default, the paper's settings where it has one; the URL and the reset button use them.
DEFAULTS = {"preset": "gmm1d", "custom": json.dumps(EXAMPLE, indent=1), "source": "trained network",
            "model": "main", "delta": 1.0, "methods": ["cfg", "autoguidance", "s2"], "lam": 3.0, "omega": 0.25,
            "num_drop": 1, "num_masks": 4, "fixed_block": 1, "interval": (0.1, 0.9), "weak": "small", "steps": 24,
            "samples": 1000, "seed": 0, "label": 0, "step": 24}


def _num(lo, hi, kind=float):
    def parse(v):
        x = kind(v)
        if not lo <= x <= hi:
            raise ValueError
        return x
    return parse


def _choice(options):
    def parse(v):
        if v not in options:
            raise ValueError
        return v
    return parse


def _methods(v):
    names = [m for m in v.split(",") if m]
    if not names or any(m not in METHODS for m in names) or len(set(names)) != len(names):
        raise ValueError
    return names


def _pair(v):
    lo, hi = (float(p) for p in v.split(","))
    if not 0 <= lo <= hi <= 1:
        raise ValueError
    return (lo, hi)


# How each setting reads from and writes to the URL (st.query_params).
PARSE = {"preset": _choice(list(PRESETS) + ["custom"]), "custom": str, "source": _choice(list(SOURCES)),
         "model": _choice(list(MODELS)), "delta": _num(0.05, 3.0), "methods": _methods, "lam": _num(0.0, 10.0),
         "omega": _num(0.0, 2.0), "num_drop": _num(1, _DROPPABLE, int), "num_masks": _num(1, 16, int),
         "fixed_block": _num(1, _DROPPABLE, int), "interval": _pair, "weak": _choice(list(WEAK_MODELS)),
         "steps": _num(4, 128, int), "samples": lambda v: _choice(SAMPLE_SIZES)(int(v)), "seed": _num(0, 1_000_000, int),
         "label": _num(0, 63, int), "step": _num(0, 128, int)}
SHOW = {"methods": ",".join, "interval": lambda v: f"{v[0]:g},{v[1]:g}"}


def settings_from_url() -> list[str]:
    """On a session's first run, put the URL's settings into the widgets; returns what was ignored."""
    if st.session_state.get("_url_read"):
        return []
    st.session_state["_url_read"] = True
    ignored = []
    for key, raw in st.query_params.to_dict().items():
        if key not in PARSE:
            ignored.append(key)
            continue
        try:
            st.session_state[key] = PARSE[key](raw)
        except (ValueError, TypeError):
            ignored.append(f"{key}={raw}")
    return ignored


def settings_to_url() -> None:
    """Mirror every setting that differs from its default into the URL (a shareable link)."""
    want = {k: SHOW.get(k, str)(st.session_state[k]) for k in DEFAULTS
            if k in st.session_state and st.session_state[k] != DEFAULTS[k]}
    if st.session_state.get("step") == st.session_state.get("steps"):
        want.pop("step", None)                 # the last step is the default whatever the step count
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


def paper_defaults() -> None:
    for k, v in DEFAULTS.items():
        st.session_state[k] = v


# Streamlit re-executes this script on every widget move, so module globals do not survive a rerun:
# the caches live in one st.cache_resource dict instead (shared by sessions, keyed by content, never
# by object identity). Models, exact references and density windows are made once; each method's
# samples, scores and rendered column are keyed by the fields that method reads
# (GuidanceConfig.canonical), so moving ω reruns S² alone and a slider move never recompiles.
@st.cache_resource(show_spinner=False)
def _store() -> dict:
    return {"custom": {}, "models": {}, "refs": {}, "windows": {}, "runs": {}, "columns": {}, "canvases": {},
            "mechanism": {}, "lock": threading.Lock()}


@st.cache_resource(show_spinner=False)
def _pool() -> ThreadPoolExecutor:
    # One worker per core (at least two): each sampler releases the GIL while XLA runs, so methods
    # sample side by side and the main thread draws finished columns meanwhile.
    return ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="toy-sampler")


def _cached(cache: dict, key, make, limit: int = 64):
    """cache[key], made on a miss; least recently used entries go first past `limit`. The lock
    guards the dict (sessions rerun in parallel threads), not `make`, which may take long."""
    lock = _store()["lock"]
    with lock:
        if key in cache:
            cache[key] = cache.pop(key)       # most recently used last
            return cache[key]
    value = make()
    with lock:
        cache[key] = value
        while len(cache) > limit:
            cache.pop(next(iter(cache)))
    return value


def mixture_from_controls(preset: str, custom_text: str):
    """(mixture, name for the model cache, content key for the app caches); the custom text is read
    by the same guarded reader as a mixture file on the command line (one error line)."""
    if preset != "custom":
        return get_preset(preset), preset, preset
    return (_cached(_store()["custom"], custom_text, lambda: parse_json(custom_text, "the custom mixture")),
            "custom", ("custom", custom_text))


def models_for(mixture, name, mkey, roles):
    def make():
        bar = st.progress(0.0, text="Training the networks once (cached on disk afterwards)…")
        try:
            return train_models(name, quick=True, mixture=mixture, roles=roles,
                                progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=f"Training: {text}"))
        finally:
            bar.empty()
    return _cached(_store()["models"], (mkey, roles), make, limit=16)


def controls():
    sb = st.sidebar
    sb.button("Paper defaults", on_click=paper_defaults, key="reset",
              help="λ = 3, ω = 0.25, one of seven blocks dropped, central 80% of the steps; gmm1d.")
    sb.header("Target")
    c = {"preset": sb.selectbox("Mixture", list(PRESETS) + ["custom"], key="preset",
                                help="gmm1d: modes at ±4 (paper Fig. 3 top); gmm2d: modes at (±4, ±4); "
                                     "tree2d: thin branches; custom: edit a JSON mixture.")}
    c["custom"] = DEFAULTS["custom"]
    if c["preset"] == "custom":
        c["custom"] = sb.text_area("Custom mixture (JSON)", key="custom", height=220,
                                   help='{"classes": [{"weights", "means", "covs"}, …]}; covariances symmetric '
                                        "positive-definite, weights > 0.")
    c["source"] = SOURCES[sb.radio("Denoiser", list(SOURCES), key="source",
                                   help="The exact denoiser isolates guidance bias from model error. It has no "
                                        "blocks: there, Autoguidance and S² use the ideal weak model, the truth "
                                        "blurred by δ.")]
    if c["source"] == "trained":
        c["model"] = sb.radio("Network", list(MODELS), key="model", horizontal=True,
                              help="main: the network as trained; blockdrop: the same network trained with "
                                   "stochastic depth (each droppable block skipped with probability 0.1).")
        c["delta"] = DEFAULTS["delta"]
    else:
        c["model"] = DEFAULTS["model"]
        c["delta"] = sb.slider("Ideal weak model δ", 0.05, 3.0, step=0.05, key="delta",
                               help="The truth with every covariance widened by δ²I: Autoguidance's weak model "
                                    "and S²'s sub-network on the exact denoiser.")
    c["methods"] = sb.multiselect("Methods", list(METHODS), key="methods", format_func=label)
    sb.header("Guidance")
    c["scale"] = sb.slider("Guidance scale λ", 0.0, 10.0, step=0.1, key="lam", help="λ = 1: no guidance.")
    c["s2_scale"] = sb.slider("S² scale ω", 0.0, 2.0, step=0.05, key="omega", help="ω = 0: S² is CFG.")
    c["num_drop"] = sb.slider("Blocks dropped per mask", 1, _DROPPABLE, key="num_drop",
                              help=f"Out of {_DROPPABLE} droppable blocks (block 0 is never dropped); 1 ≈ the "
                                   f"paper's 10%.")
    c["num_masks"] = sb.slider("N sub-networks (naive S²)", 1, 16, key="num_masks")
    c["fixed_block"] = sb.slider("Dropped block (fixed-block S²)", 1, _DROPPABLE, key="fixed_block")
    c["interval"] = sb.slider("Application interval (fraction of steps)", 0.0, 1.0, step=0.05, key="interval",
                              help="S² acts only in this part of the sampler; CFG elsewhere.")
    c["weak"] = sb.radio("Autoguidance weak model", list(WEAK_MODELS), key="weak", horizontal=True)
    sb.header("Sampler")
    c["steps"] = sb.slider("Steps (Heun)", 4, 128, key="steps",
                           help="24 Heun steps (47 network evaluations): their discretisation error is a fraction "
                                "of the sampling noise of 1000 samples.")
    c["samples"] = sb.select_slider("Samples", SAMPLE_SIZES, key="samples",
                                    help="Per method. More samples: smoother plots, slower redraws.")
    c["seed"] = int(sb.number_input("Seed", 0, 1_000_000, key="seed"))
    return c


def reference(mkey, mixture, label_, seed, n):
    """Exact samples to show, the reference to score against, the scores of the first, and standard
    normal noise of their shape: they depend on neither λ nor ω, so a slider move reuses them
    (toy.evaluation: the same numbers as `compare` and the figures for the same seed and settings).
    The exact samples plus σ·noise are exact samples of p_σ(x | c) for the step view, drawn by the
    programs the samplers already use."""
    def make():
        target = mixture.cond(label_)
        ref = E.make_reference(target, seed, n)
        truth = E.truth_samples(target, seed, n)
        return truth, ref, E.score(truth, ref), np.asarray(initial_noise(jax.random.key(seed), n, mixture.dim))
    return _cached(_store()["refs"], (mkey, label_, seed, n), make, limit=32)


def window_for(mkey, mixture, label_, sigma=0.0):
    return _cached(_store()["windows"], (mkey, label_, round(float(sigma), 6)),
                   lambda: P.density_window(mixture.cond(label_), sigma), limit=256)


def run_method(main_d, weak, gcfg, scfg, seed, n, label_, ref_ready: Future):
    """One method, in a worker thread: samples, trajectories and scores, or the ToyError that
    explains why it cannot run (shown inline, never a traceback). Sampling needs only the seed; the
    scores wait for the reference, which the script thread makes meanwhile."""
    try:
        r = E.draw(main_d, gcfg, scfg, seed, label_, n, weak=weak, return_trajectory=True)
        x = np.asarray(r.x)                                                                  # [n, d]
        scores = E.score(x, ref_ready.result())
    except ToyError as e:
        return e
    return {"x": x, "trajectory": np.asarray(r.trajectory), "sigmas": r.sigmas, "metrics": scores}


COL_W, COL_H, DPI = 3.2, 6.0, 80


class Canvas:
    """A reused figure (one per layout): its artists are built once and only their data change
    between renders, since building axes and ticks anew costs as much again as drawing them."""

    def __init__(self, width, height, rows, cols):
        self.lock = threading.Lock()
        self.fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.axes = np.atleast_1d(self.fig.subplots(rows, cols)).ravel()
        for a in self.axes:
            a.xaxis.set_major_locator(MaxNLocator(5))
            a.yaxis.set_major_locator(MaxNLocator(5))

    def unlabelled_y(self, ax) -> None:
        """No y ticks on a density panel: its values teach nothing, and tick labels are most of a redraw."""
        ax.yaxis.set_major_locator(NullLocator())

    def pixels(self) -> np.ndarray:
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba()).copy()                                   # [H, W, 4]


class ColumnCanvas(Canvas):
    """One method's column: samples over the true density (top) and trajectories (bottom, Fig. 9)."""

    def __init__(self, window: P.Window):
        super().__init__(COL_W, COL_H, 2, 1)
        self.title = self.axes[0].set_title("", fontsize=10)
        self.samples = P.SamplesArtist(self.axes[0], window)
        if window.dim == 1:
            self.unlabelled_y(self.axes[0])
        self.paths = P.TrajectoryArtist(self.axes[1], window)
        self.note = self.axes[1].text(0.5, 0.5, "exact samples\nno trajectory", ha="center", va="center",
                                      transform=self.axes[1].transAxes)
        self.fig.subplots_adjust(left=0.2, right=0.96, top=0.94, bottom=0.08, hspace=0.25)

    def render(self, name: str, x: np.ndarray, traj: np.ndarray | None, window: P.Window) -> np.ndarray:
        with self.lock:
            self.title.set_text(name)
            self.samples.set_window(window)
            self.samples.set(x)
            self.paths.set_window(window)
            self.note.set_visible(traj is None)
            if traj is None:
                self.axes[1].set_axis_off()
            else:
                self.axes[1].set_axis_on()
            self.paths.paths.set_visible(traj is not None)
            if traj is not None:
                self.paths.set(traj[:, :TRAJ_N])
            return self.pixels()


class StepCanvas(Canvas):
    """The sampler at one step: each method's states over the exact noised density p_σ(x | c)."""

    def __init__(self, window: P.Window, panels: int):
        super().__init__(2.6 * panels, 2.7, 1, panels)
        self.artists = [P.SamplesArtist(ax, window) for ax in self.axes]
        for ax in self.axes if window.dim == 1 else ():
            self.unlabelled_y(ax)
        self.titles = [ax.set_title("", fontsize=9) for ax in self.axes]
        self.fig.subplots_adjust(left=0.06, right=0.98, top=0.84, bottom=0.12, wspace=0.3)

    def render(self, panels: list[tuple[str, np.ndarray]], window: P.Window) -> np.ndarray:
        with self.lock:
            for art, title, (name, x) in zip(self.artists, self.titles, panels):
                art.set_window(window)
                art.set(x)
                title.set_text(name)
            return self.pixels()


def canvas(key, make):
    store = _store()
    with store["lock"]:
        if key not in store["canvases"]:
            store["canvases"][key] = make()
        return store["canvases"][key]


def to_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


TERM_NAMES = {"cfg_push": "CFG push (λ − 1)(D_c − D_∅)", "s2_correction": "S² correction −ω(D̂_c(m) − D_c)",
              "model_error": "true model error D*_c − D_c"}
TERM_STYLE = {"cfg_push": dict(color="C0"), "s2_correction": dict(color="C3"), "model_error": dict(color="k", ls=":")}


class MechanismCanvas(Canvas):
    """Left: the guidance terms at σ (curves over x in 1D, arrows in 2D). Right: α, β and cos_error
    against σ along the CFG sampler, with σ marked."""

    def __init__(self, dim: int):
        super().__init__(9.6, 3.3, 1, 2)
        ax, bx = self.axes
        self.dim, self.quivers = dim, []
        if dim == 1:
            self.curves = {k: ax.plot([], [], label=v, **TERM_STYLE[k])[0] for k, v in TERM_NAMES.items()}
            ax.axhline(0, color="0.6", lw=0.5)
            ax.set_xlabel("x")
            ax.legend(fontsize=7, loc="upper left")
        else:
            self.contours = LineCollection([], colors="0.7", linewidths=0.4)
            ax.add_collection(self.contours)
        self.title = ax.set_title("", fontsize=9)
        self.series = {k: bx.plot([], [], marker=".", ms=3, label=lab, **st_)[0] for k, lab, st_ in (
            ("alpha", "α", dict(color="C0")), ("beta", "β", dict(color="C2")),
            ("cos_error", "cos(s, model error)", dict(color="k", ls=":")))}
        self.mark = bx.axvline(1.0, color="C3", lw=1)
        bx.axhline(0, color="0.6", lw=0.5)
        bx.set_xscale("log")
        bx.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))      # plain numbers: no mathtext
        bx.xaxis.set_minor_locator(NullLocator())                                    # decades only
        bx.set_xlabel("σ")
        bx.set_title("s = D_c − D̂_c ≈ α·(D_c − D_∅) + β·(D_c − x) along the CFG sampler", fontsize=8)
        bx.legend(fontsize=7)
        self.fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.15, wspace=0.25)

    def render(self, terms: dict, grid: np.ndarray, window: P.Window, dec: dict, sigma: float) -> np.ndarray:
        with self.lock:
            ax, bx = self.axes
            if self.dim == 1:
                for k, v in terms.items():
                    self.curves[k].set_data(grid[:, 0], v[:, 0])
                lim = max(1e-9, max(float(np.abs(v).max()) for v in terms.values()))
                ax.set_xlim(grid[0, 0], grid[-1, 0])
                ax.set_ylim(-1.1 * lim, 1.1 * lim)
            else:
                for q in self.quivers:
                    q.remove()
                self.contours.set_segments(window.contours)
                span = float(np.max(window.hi - window.lo))
                scale = max(float(np.max(np.linalg.norm(np.concatenate(list(terms.values())), axis=1))), 1e-9) / (0.08 * span)
                self.quivers = [ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], angles="xy", scale_units="xy",
                                          scale=scale, width=0.004, label=TERM_NAMES[k], color=TERM_STYLE[k]["color"])
                                for k, v in terms.items()]
                ax.set_xlim(window.lo[0], window.hi[0])
                ax.set_ylim(window.lo[1], window.hi[1])
                ax.legend(handles=self.quivers, fontsize=7, loc="upper left")
            self.title.set_text(f"guidance terms on D at σ = {sigma:.3g}")
            s = np.asarray(dec["sigmas"])
            for k, line in self.series.items():
                line.set_data(s, dec[k])
            vals = np.concatenate([np.asarray(dec[k], float) for k in ("alpha", "beta")])
            vals = vals[np.isfinite(vals)]
            lo, hi = (min(-1.0, float(np.percentile(vals, 2))), max(1.0, float(np.percentile(vals, 98)))) if vals.size \
                else (-1.0, 1.0)
            bx.set_xlim(s.min() * 0.8, s.max() * 1.25)
            bx.set_ylim(lo - 0.1, hi + 0.1)
            self.mark.set_xdata([max(sigma, s.min())] * 2)
            return self.pixels()


def mechanism_grid(main_d, exact_d, mixture, label_, gbase, sigma, mkey, source_key):
    """(grid, guidance terms on it, window) at σ: they need no sampler run, so they are made while
    the methods sample (cached per denoiser, drop settings, λ, ω and σ)."""
    window = window_for(mkey, mixture, label_, sigma)

    def make():
        if mixture.dim == 1:
            grid = np.linspace(window.lo[0], window.hi[0], 200)[:, None]                       # [200, 1]
        else:
            gx, gy = np.meshgrid(np.linspace(window.lo[0], window.hi[0], 13), np.linspace(window.lo[1], window.hi[1], 13))
            grid = np.stack([gx.ravel(), gy.ravel()], 1)                                       # [169, 2]
        return grid, guidance_terms(main_d, exact_d, grid, sigma, label_, gbase, masks=MECH_MASKS,
                                    key=jax.random.key(0))
    key = ("terms", mkey, label_, source_key, gbase.num_drop, gbase.drop_ratio, gbase.exclude, gbase.scale,
           gbase.s2_scale, round(float(sigma), 6))
    return (*_cached(_store()["mechanism"], key, make, limit=64), window)


def decomposition(main_d, exact_d, label_, cfg_run, gbase, run_key):
    """The S² signal taken apart along the CFG sampler's own states (toy.mechanism.decompose_states),
    cached per CFG run and drop settings; `cfg_run` may be the future of that run."""
    def make():
        run = cfg_run.result() if isinstance(cfg_run, Future) else cfg_run
        if isinstance(run, ToyError):
            return run
        traj = run["trajectory"]                                                            # [T + 1, n, d]
        idx = np.linspace(0, traj.shape[1] - 1, min(MECH_STATES, traj.shape[1])).astype(int)
        return decompose_states(main_d, exact_d, traj[:, idx], run["sigmas"], label_, gbase, masks=MECH_MASKS,
                                key=jax.random.key(0))
    return _cached(_store()["mechanism"], ("decomposition", run_key, gbase.num_drop, gbase.drop_ratio, gbase.exclude),
                   make, limit=32)


def mechanism_view(mixture, dec, sigma, grid_terms):
    """The picture: the guidance terms at σ beside the decomposition along the CFG sampler."""
    grid, terms, window = grid_terms
    img = canvas(("mechanism", mixture.dim), lambda: MechanismCanvas(mixture.dim)).render(terms, grid, window, dec, sigma)
    return to_png(img)


def show_mechanism(mixture, cfg_run, dec, gbase, sigma, grid_terms) -> None:
    """The mechanism section at the chosen step, from CFG's run (or the error that stopped it)."""
    if isinstance(cfg_run, ToyError):
        st.error(f"CFG: error: {cfg_run}")
        return
    st.image(mechanism_view(mixture, dec, sigma, grid_terms))
    T1 = len(dec["sigmas"])
    inside = [i for i in range(T1) if gbase.interval[0] <= i / max(T1 - 1, 1) <= gbase.interval[1]]
    med = {k: float(np.nanmedian(np.asarray(dec[k], float)[inside])) for k in ("alpha", "beta")} if inside \
        else {"alpha": float("nan"), "beta": float("nan")}
    verdict = ("S² acts as extra CFG here (α > 0): it pushes the modes further out" if med["alpha"] > 0.1 else
               "S² pulls toward the class's modes (β > 0), like a weak model" if med["beta"] > 0.05 else
               "the sub-networks barely differ from the full network: S² is close to CFG")
    st.caption(f"Left: at σ = {sigma:.3g}, what each term adds to D. Right: along the CFG sampler, the S² signal "
               f"s = D_c − D̂_c(m) fitted as α·(D_c − D_∅) + β·(D_c − x) ({MECH_STATES} states, {MECH_MASKS} "
               f"masks per σ). Where S² acts, median α = {med['alpha']:.2f}, β = {med['beta']:.2f}: {verdict}.")


def main():
    st.set_page_config(page_title="S²-Guidance toy simulator", layout="wide", menu_items={})
    for k, v in DEFAULTS.items():
        st.session_state.setdefault(k, v)
    ignored = settings_from_url()
    st.title("S²-Guidance toy simulator")
    st.caption("Guidance methods against the exact ground truth of a Gaussian mixture "
               "(paper: S²-Guidance, Stochastic Self Guidance, arXiv:2508.12880).")
    if ignored:
        st.warning(f"Ignored in the link (unknown or out of range): {', '.join(ignored)}")
    c = controls()
    t0 = time.perf_counter()
    try:
        mixture, name, mkey = mixture_from_controls(c["preset"], c["custom"])
    except ToyError as e:
        st.error(f"error: {e}")
        return
    if st.session_state["label"] >= mixture.num_classes:
        st.session_state["label"] = 0
    label_ = st.sidebar.selectbox("Class to sample", list(range(mixture.num_classes)), key="label",
                                  format_func=lambda i: f"{i}: {mixture.class_names[i]}")
    if not c["methods"]:
        st.info("Choose at least one method in the sidebar.")
        settings_to_url()
        return
    exact = c["source"] == "exact"
    methods = [m for m in c["methods"] if not exact or m in EXACT_METHODS]
    skipped = [m for m in c["methods"] if m not in methods]
    if skipped:
        st.warning(f"{', '.join(label(m) for m in skipped)} need a network's blocks; the exact denoiser runs "
                   f"{', '.join(label(m) for m in EXACT_METHODS)}. Switch the denoiser to 'trained network' to see them.")
    if not methods:
        settings_to_url()
        return
    exact_d = ExactDenoiser(mixture, ideal_blur=c["delta"])
    try:
        if exact:
            main_d, weak = exact_d, exact_d.weak()
        else:
            models = models_for(mixture, name, mkey, tuple(dict.fromkeys((c["model"], c["weak"]))))
            main_d, weak = models[c["model"]], models[c["weak"]]
    except ToyError as e:
        st.error(f"error: {e}")
        return
    gbase = GuidanceConfig(scale=c["scale"], s2_scale=c["s2_scale"], num_drop=c["num_drop"],
                           interval=tuple(c["interval"]), num_masks=c["num_masks"],
                           fixed_blocks=(c["fixed_block"],))
    scfg = SamplerConfig(steps=c["steps"])
    n, seed = c["samples"], c["seed"]
    plots = mixture.dim <= 2
    # What this page's thread spent its time on: the samplers run in the pool meanwhile, so the first entry
    # is the wait for them, not their run time (0 when they finished while the page drew).
    store, timing = _store(), {"waiting for the samplers": 0.0, "drawing": 0.0, "mechanism view": 0.0}
    source_key = ("exact", c["delta"]) if exact else ("trained", c["model"])
    T = c["steps"]
    if st.session_state["step"] > T or st.session_state["step"] == st.session_state.get("_steps_before"):
        st.session_state["step"] = T               # clamped, or kept at the last step when the count moves
    st.session_state["_steps_before"] = T
    step = st.session_state["step"]

    # Start every method not in the cache (and CFG, which the mechanism view reads) and the mechanism's
    # guidance terms at this step's σ before anything else: sampling needs only the seed, so the
    # samplers compile and run while this thread makes the reference, which their scores then wait for.
    ref_ready, keys, pending, got = Future(), {}, {}, {}
    try:
        for m in dict.fromkeys(methods + ["cfg"]):
            gcfg = replace(gbase, method=m)
            uses_weak = "weak" in REGISTRY[m].needs and not exact
            keys[m] = (mkey, label_, source_key, gcfg.canonical(), scfg, n, seed, c["weak"] if uses_weak else None)
            with store["lock"]:
                got[m] = store["runs"].get(keys[m])
            if got[m] is None:
                pending[m] = _pool().submit(run_method, main_d, weak, gcfg, scfg, seed, n, label_, ref_ready)
        if plots:
            sigma_mech = float(scfg.sigmas(main_d.sigma_data)[min(step, T - 1)])     # the last step shows σ_min, not 0
            grid_terms = _pool().submit(mechanism_grid, main_d, exact_d, mixture, label_, gbase, sigma_mech, mkey,
                                        source_key)
            # after CFG's run in the queue, so it never waits on a run no worker has taken
            dec = _pool().submit(decomposition, main_d, exact_d, label_, pending.get("cfg", got["cfg"]), gbase, keys["cfg"])
        truth, ref, truth_metrics, noise = reference(mkey, mixture, label_, seed, n)
        ref_ready.set_result(ref)
    except ToyError as e:
        st.error(f"error: {e}")
        return
    finally:
        if not ref_ready.done():           # an error or a rerun: the workers waiting on it return instead of hanging
            ref_ready.set_exception(ToyError("this run of the page stopped before its reference was made"))
    if not plots:
        st.info(f"This mixture is {mixture.dim}-dimensional: the plots show 1D and 2D mixtures only; the metrics "
                "below are measured in all dimensions.")
    window = window_for(mkey, mixture, label_) if plots else None

    # The page's slots in reading order; they are filled as runs land: CFG's run first (the mechanism
    # view reads it), so its column and the mechanism are drawn while the other methods still sample.
    errors_box, cols_slot = st.container(), st.empty()
    if plots:
        st.subheader("The sampler in time")
        col_a, col_b = st.columns([5, 1])
        col_a.slider("Sampler step t (0: pure noise at σ_max; the last: the samples)", 0, T, key="step")
        play = col_b.button("▶ Play", key="play", help="Run the sampler from noise to samples, step by step.")
        step_slot = st.empty()
        st.subheader("The mechanism at this step")
        mech_box = st.container()
    t = time.perf_counter()
    columns = {} if not plots else {"truth": _cached(store["columns"], (mkey, label_, n, seed, "truth"), lambda: canvas(
        ("column", mixture.dim), lambda: ColumnCanvas(window)).render("exact samples", truth, None, window))}
    timing["drawing"] += time.perf_counter() - t
    results, errors = {}, {}
    for m in ["cfg"] + [m for m in methods if m != "cfg"]:
        t = time.perf_counter()
        if m in pending:
            got[m] = _cached(store["runs"], keys[m], pending[m].result, limit=256)
        timing["waiting for the samplers"] += time.perf_counter() - t
        r = got[m]
        if isinstance(r, ToyError):
            errors[m] = r
        elif m in methods:
            results[m] = r
            if plots:
                t = time.perf_counter()
                columns[m] = _cached(store["columns"], keys[m], lambda: canvas(
                    ("column", mixture.dim), lambda: ColumnCanvas(window)).render(label(m), r["x"], r["trajectory"],
                                                                                  window), limit=96)
                timing["drawing"] += time.perf_counter() - t
        if m == "cfg" and plots:
            t = time.perf_counter()
            with mech_box:
                show_mechanism(mixture, r, dec.result(), gbase, sigma_mech, grid_terms.result())
            timing["mechanism view"] += time.perf_counter() - t
    for m in methods:
        if m in errors:
            errors_box.error(f"{label(m)}: error: {errors[m]}")
    results = {m: results[m] for m in methods if m in results}         # the sidebar's order
    rows = {"exact samples": truth_metrics, **{label(m): r["metrics"] for m, r in results.items()}}
    if not results:
        settings_to_url()
        return
    png = None
    if plots:
        t = time.perf_counter()
        png = to_png(np.concatenate([columns["truth"]] + [columns[m] for m in results], axis=1))   # [H, W·cols, 4]
        cols_slot.image(png, caption=f"Top: samples (blue) over the exact conditional density. Bottom: sampler "
                                     f"trajectories of {TRAJ_N} samples.")
        sigmas = next(iter(results.values()))["sigmas"]

        def draw_step(t_):
            w = window_for(mkey, mixture, label_, float(sigmas[t_]))
            panels = [("exact p_σ(x | c)", truth + np.float32(sigmas[t_]) * noise)]                # [n, d]
            panels += [(label(m), r["trajectory"][t_]) for m, r in results.items()]
            img = canvas(("step", mixture.dim, len(panels)), lambda: StepCanvas(w, len(panels))).render(panels, w)
            step_slot.image(to_png(img), caption=f"Step {t_} of {T}: σ = {sigmas[t_]:.3g}. Each method's states "
                                                 f"over the exact noised density p_σ(x | c) (covariances + σ²I).")
        if play:
            for t_ in range(T + 1):
                draw_step(t_)
                time.sleep(0.12)
        else:
            draw_step(step)
        timing["drawing"] += time.perf_counter() - t

    table = pd.DataFrame(rows).T[list(METRICS)]
    st.subheader("Distance to the exact target")
    st.dataframe(table, key="metrics", column_config={k: st.column_config.NumberColumn(format="%.4f") for k in METRICS})
    source = f"exact denoiser (ideal weak model δ = {c['delta']})" if exact else f"trained {c['model']} network"
    settings = (f"{name}, class {label_}, {source}, λ = {c['scale']}, "
                f"ω = {c['s2_scale']}, {c['num_drop']} block(s) dropped, N = {c['num_masks']}, interval "
                f"{tuple(c['interval'])}, {c['steps']} Heun steps, {n} samples, seed {seed}")
    st.caption(f"Settings: {settings}. Rendered in {time.perf_counter() - t0:.2f} s "
               f"({', '.join(f'{k} {v:.2f} s' for k, v in timing.items())}; "
               f"{len([m for m in pending if m in methods])} of {len(methods)} method(s) sampled anew, the rest reused).")
    for m in results:
        st.markdown(f"**{label(m)}**: {REGISTRY[m].explain}")

    def csv():
        return pd.concat([pd.DataFrame(v["x"], columns=[f"x{i}" for i in range(mixture.dim)]).assign(method=k)
                          for k, v in {"exact samples": {"x": truth}, **results}.items()]).to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Samples (CSV)", csv, "samples.csv", "text/csv", key="dl_csv")
    if png is not None:
        c2.download_button("Figure (PNG)", png, "figure.png", "image/png", key="dl_png")
    c3.download_button("Metrics (JSON)", json.dumps({"settings": settings, "metrics": table.to_dict("index")},
                                                     indent=1), "metrics.json", "application/json", key="dl_json")
    settings_to_url()


main()
