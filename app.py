"""Streamlit app: λ and ω sliders over every guidance method, against the exact ground truth.

Run with `streamlit run app.py`. Uses only the public functions of the `toy` package.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import contourpy
import jax
import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from toy.diffusion import SamplerConfig, sample
from toy.errors import ToyError
from toy.guidance import EXACT_METHODS, METHODS, GuidanceConfig
from toy.metrics import METRICS, evaluate
from toy.mixtures import PRESETS, from_dict, get_preset
from toy.nets import ExactDenoiser
from toy.train import train_models

EXAMPLE = {"classes": [{"weights": [1, 1], "means": [[-3, 0], [3, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 2]]]},
                       {"weights": [1], "means": [[0, 2]], "covs": [[[1, 0.3], [0.3, 1]]]}],
           "class_names": ["pair", "single"]}

EXPLAIN = {
    "none": r"Plain conditional sampling, $\tilde D = D_c$: the reference every guidance distorts.",
    "cfg": r"Classifier-free guidance (Eq. 1): $\tilde D = D_\varnothing + \lambda (D_c - D_\varnothing)$. "
           "Even with exact denoisers it pushes modes away from the other classes and narrows them.",
    "autoguidance": r"Autoguidance: $\tilde D = D_{weak} + \lambda (D_c - D_{weak})$ with a smaller or "
                    "less-trained model of the same class.",
    "s2-naive": r"Naive S² (Eq. 3): CFG $-\ \frac{\omega}{N}\sum_i (\hat D_c(m_i) - D_c)$, N random sub-networks per step.",
    "s2": r"S²-Guidance (Eq. 4, Alg. 1): CFG $-\ \omega (\hat D_c(m_t) - D_c)$ with one fresh mask per step.",
    "fixed-block": r"As S² with one fixed dropped block for every step (paper Fig. 7c/d).",
    "cfg++": r"CFG++: the CFG estimate with $\lambda \in [0, 1]$ (fixed at 0.6 here), renoised with $D_\varnothing$'s "
             "noise (a first-order step).",
    "cfg-zero*": r"CFG-Zero*: CFG on $\epsilon$ with the unconditional branch rescaled by "
                 r"$s^* = \langle\epsilon_c, \epsilon_\varnothing\rangle / \|\epsilon_\varnothing\|^2$; the first step is zeroed.",
    "apg": r"Adaptive projected guidance: the guidance update $D_c - D_\varnothing$ with momentum, its norm capped "
           "and its component parallel to $D_c$ removed.",
    "guidance-interval": r"Guidance interval: CFG only for $\sigma \in (0.28, 5.42]$, plain $D_c$ elsewhere.",
}

# Streamlit re-executes this script on every widget move, so module globals do not survive a rerun:
# the caches live in one st.cache_resource dict instead (shared by sessions, keyed by content, never
# by object identity). Models, exact reference samples and density grids are made once; each
# method's samples, scores and rendered column are keyed by the fields that method reads
# (GuidanceConfig.canonical), so moving ω reruns S² alone and a slider move never recompiles.
@st.cache_resource(show_spinner=False)
def _store() -> dict:
    return {"custom": {}, "models": {}, "refs": {}, "grids": {}, "runs": {}, "columns": {}, "canvases": {},
            "lock": threading.Lock()}


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
    """(mixture, name for the model cache, content key for the app caches)."""
    if preset != "custom":
        return get_preset(preset), preset, preset

    def parse():
        try:
            spec = json.loads(custom_text)
        except json.JSONDecodeError as e:
            raise ToyError(f"the custom mixture is not valid JSON: {e}") from None
        return from_dict(spec, name="custom")
    return _cached(_store()["custom"], custom_text, parse), "custom", ("custom", custom_text)


def models_for(mixture, name, mkey):
    def make():
        bar = st.progress(0.0, text="Training the main and weak models once (cached on disk afterwards)…")
        models = train_models(name, quick=True, mixture=mixture,
                              progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=f"Training: {text}"))
        bar.empty()
        return models
    return _cached(_store()["models"], mkey, make, limit=16)


def controls():
    sb = st.sidebar
    sb.header("Target")
    c = {}
    c["preset"] = sb.selectbox("Mixture", list(PRESETS) + ["custom"], key="preset",
                               help="gmm1d: modes at ±4 (paper Fig. 3 top); gmm2d: modes at (±4, ±4); "
                                    "tree2d: thin branches; custom: edit a JSON mixture.")
    c["custom"] = json.dumps(EXAMPLE, indent=1)
    if c["preset"] == "custom":
        c["custom"] = sb.text_area("Custom mixture (JSON)", c["custom"], height=220, key="custom",
                                   help='{"classes": [{"weights", "means", "covs"}, …]}; covariances symmetric '
                                        "positive-definite, weights > 0.")
    c["source"] = sb.radio("Denoiser", ["trained network", "exact closed form"], key="source",
                           help="The exact denoiser isolates guidance bias from model error; it has no "
                                "blocks or weak model, so none, CFG and the baselines run on it.")
    c["methods"] = sb.multiselect("Methods", list(METHODS), default=["cfg", "autoguidance", "s2"], key="methods")
    sb.header("Guidance")
    c["scale"] = sb.slider("Guidance scale λ", 0.0, 10.0, 3.0, 0.1, key="lam", help="λ = 1: no guidance.")
    c["s2_scale"] = sb.slider("S² scale ω", 0.0, 2.0, 0.25, 0.05, key="omega", help="ω = 0: S² is CFG.")
    c["num_drop"] = sb.slider("Blocks dropped per mask", 1, 7, 1, key="num_drop",
                              help="Out of 7 droppable blocks (block 0 is never dropped); 1 ≈ the paper's 10%.")
    c["num_masks"] = sb.slider("N sub-networks (naive S²)", 1, 16, 4, key="num_masks")
    c["fixed_block"] = sb.slider("Dropped block (fixed-block)", 1, 7, 1, key="fixed_block")
    c["interval"] = sb.slider("Application interval (fraction of steps)", 0.0, 1.0, (0.1, 0.9), 0.05,
                              key="interval", help="S² acts only in this part of the sampler; CFG elsewhere.")
    c["weak"] = sb.radio("Autoguidance weak model", ["small", "early"], key="weak", horizontal=True)
    sb.header("Sampler")
    c["steps"] = sb.slider("Steps (Heun)", 4, 128, 24, key="steps",
                           help="24 Heun steps (47 network evaluations): their discretisation error is a fraction "
                                "of the sampling noise of 1000 samples (README, The app).")
    c["samples"] = sb.select_slider("Samples", [200, 500, 1000, 2000, 5000, 10000, 20000], 1000, key="samples",
                                    help="Per method. More samples: smoother plots, slower redraws.")
    c["seed"] = int(sb.number_input("Seed", 0, 1_000_000, 0, key="seed"))
    return c


TRAJ_N = 40          # trajectories drawn per method


def reference(mkey, mixture, label, seed, n):
    """Exact samples to show, exact reference samples to score against, and the scores of the
    first: they depend on neither λ nor ω, so a slider move reuses them."""
    def make():
        target, key = mixture.cond(label), jax.random.key(seed)
        truth = np.asarray(target.sample(jax.random.fold_in(key, 2), n))                         # [n, d]
        ref = np.asarray(target.sample(jax.random.fold_in(key, 1), max(n, 2000)))                 # [m, d]
        return truth, ref, evaluate(truth, target, ref, num_projections=64, max_points=600)
    return _cached(_store()["refs"], (mkey, label, seed, n), make, limit=32)


def density_grid(mkey, mixture, label):
    """The plot window and the true density, once per mixture and class: in 1D the pdf on a grid,
    in 2D the contour lines of log p (computed once, drawn as one line collection)."""
    def make():
        target = mixture.cond(label)
        x = np.asarray(target.sample(jax.random.key(0), 20000))                               # [20000, d]
        lo, hi = x.min(0) - 1.5, x.max(0) + 1.5
        if mixture.dim == 1:
            grid = np.linspace(lo[0], hi[0], 400)[:, None].astype(np.float32)                   # [400, 1]
            return {"lo": float(lo[0]), "hi": float(hi[0]), "x": grid[:, 0], "pdf": np.asarray(target.pdf(grid))}
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))   # [120, 120] ×2
        pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)                        # [14400, 2]
        lp = np.asarray(target.logp(pts), np.float64).reshape(gx.shape)                       # [120, 120]
        gen = contourpy.contour_generator(gx, gy, lp)
        lines = [seg for level in np.linspace(lp.max() - 12, lp.max(), 7) for seg in gen.lines(level)]
        return {"lo": lo, "hi": hi, "contours": lines}
    return _cached(_store()["grids"], (mkey, label), make, limit=32)


def run_method(main_d, weak, gcfg, scfg, seed, n, label, target, ref):
    """One method, in a worker thread: samples, the first TRAJ_N trajectories and the scores, or
    the ToyError that explains why it cannot run (shown inline, never a traceback)."""
    try:
        r = sample(main_d, gcfg, scfg, jax.random.fold_in(jax.random.key(seed), 3), n, label, weak=weak,
                   return_trajectory=True)
    except ToyError as e:
        return e
    x = np.asarray(r.x)                                                                        # [n, d]
    traj = np.asarray(r.trajectory)[:, :TRAJ_N].copy()                                        # [T + 1, m, d]
    return {"x": x, "trajectory": traj, "metrics": evaluate(x, target, ref, num_projections=64, max_points=600)}


COL_W, COL_H, DPI = 3.2, 6.0, 80


class ColumnCanvas:
    """One method's column, samples over the true density (top) and denoising trajectories (bottom,
    paper Fig. 9), rendered to an RGBA array. One figure per data dimension is kept and only its
    artists' data change between renders: building axes and ticks anew costs as much again."""

    def __init__(self, dim: int):
        self.dim, self.lock = dim, threading.Lock()
        self.fig = Figure(figsize=(COL_W, COL_H), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.ax, self.axt = self.fig.subplots(2, 1)
        self.title = self.ax.set_title("", fontsize=10)
        if dim == 1:
            self.hist = self.ax.stairs(np.zeros(1), np.arange(2.0), fill=True, color="C0", alpha=0.6)
            self.curve, = self.ax.plot([], [], "k", lw=1.2)
            self.axt.set_xlabel("sampler step")
            self.axt.set_ylabel("x")
        else:
            self.contours = [LineCollection([], colors="k", linewidths=lw) for lw in (0.5, 0.4)]
            self.ax.add_collection(self.contours[0])
            self.axt.add_collection(self.contours[1])
            self.points = self.ax.scatter(np.zeros(1), np.zeros(1), s=2, alpha=0.3, color="C0")
        self.paths = LineCollection([], linewidths=0.6, alpha=0.6)
        self.axt.add_collection(self.paths)
        self.note = self.axt.text(0.5, 0.5, "exact samples\nno trajectory", ha="center", va="center",
                                  transform=self.axt.transAxes)
        for a in (self.ax, self.axt):
            a.xaxis.set_major_locator(MaxNLocator(5))
            a.yaxis.set_major_locator(MaxNLocator(5))
        self.fig.subplots_adjust(left=0.2, right=0.96, top=0.94, bottom=0.08, hspace=0.25)

    def render(self, name: str, x: np.ndarray, traj: np.ndarray | None, grid: dict) -> np.ndarray:
        """x: [n, d] samples; traj: [T + 1, m, d] trajectories, or None for exact samples."""
        with self.lock:
            self.title.set_text(name)
            lo, hi = grid["lo"], grid["hi"]
            if self.dim == 1:
                counts, edges = np.histogram(np.clip(x[:, 0], lo, hi), bins=80, range=(lo, hi), density=True)
                self.hist.set_data(counts, edges)
                self.curve.set_data(grid["x"], grid["pdf"])
                self.ax.set_xlim(lo, hi)
                self.ax.set_ylim(0, 1.08 * max(counts.max(), grid["pdf"].max()))
            else:
                for lc in self.contours:
                    lc.set_segments(grid["contours"])
                self.points.set_offsets(x)
                for a in (self.ax, self.axt):
                    a.set_xlim(lo[0], hi[0])
                    a.set_ylim(lo[1], hi[1])
            self.note.set_visible(traj is None)
            if traj is None:
                self.axt.set_axis_off()
                self.paths.set_segments([])
                if self.dim == 2:
                    self.contours[1].set_segments([])
            else:
                self.axt.set_axis_on()
                T1, m = traj.shape[0], traj.shape[1]
                if self.dim == 1:
                    steps = np.broadcast_to(np.arange(T1, dtype=np.float64)[:, None], (T1, m))   # [T + 1, m]
                    lines = np.stack([steps, traj[:, :, 0]], -1).transpose(1, 0, 2)             # [m, T + 1, 2]
                    self.axt.set_xlim(0, T1 - 1)
                    self.axt.set_ylim(lo - 4, hi + 4)
                else:
                    lines = traj[1:].transpose(1, 0, 2)                                          # [m, T, 2]
                self.paths.set_segments(lines)
                self.paths.set_color([f"C{i % 10}" for i in range(m)])
            self.fig.canvas.draw()
            return np.asarray(self.fig.canvas.buffer_rgba()).copy()                              # [H, W, 4]


def draw_column(name: str, x: np.ndarray, traj: np.ndarray | None, grid: dict, dim: int) -> np.ndarray:
    store = _store()
    with store["lock"]:
        if dim not in store["canvases"]:
            store["canvases"][dim] = ColumnCanvas(dim)
        canvas = store["canvases"][dim]
    return canvas.render(name, x, traj, grid)


def to_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def main():
    st.set_page_config(page_title="S²-Guidance toy simulator", layout="wide")
    st.title("S²-Guidance toy simulator")
    st.caption("Guidance methods against the exact ground truth of a Gaussian mixture "
               "(paper: S²-Guidance, Stochastic Self-Guidance).")
    c = controls()
    t0 = time.perf_counter()
    try:
        mixture, name, mkey = mixture_from_controls(c["preset"], c["custom"])
    except ToyError as e:
        st.error(f"Invalid custom mixture: {e}")
        return
    label = st.sidebar.selectbox("Class to sample", range(mixture.num_classes), key="label",
                                 format_func=lambda i: f"{i}: {mixture.class_names[i]}")
    if label >= mixture.num_classes:
        label = 0
    if not c["methods"]:
        st.info("Choose at least one method in the sidebar.")
        return
    exact = c["source"] == "exact closed form"
    methods = [m for m in c["methods"] if not exact or m in EXACT_METHODS]
    skipped = [m for m in c["methods"] if m not in methods]
    if skipped:
        st.warning(f"{', '.join(skipped)} need a network's blocks or a weak model; the exact denoiser runs "
                   f"{', '.join(EXACT_METHODS)} only. Switch the denoiser to 'trained network' to see them.")
    if not methods:
        return
    models = None if exact else models_for(mixture, name, mkey)
    main_d = ExactDenoiser(mixture) if exact else models["main"]
    gbase = GuidanceConfig(scale=c["scale"], s2_scale=c["s2_scale"], num_drop=c["num_drop"],
                           interval=tuple(c["interval"]), num_masks=c["num_masks"],
                           fixed_blocks=(c["fixed_block"],))
    scfg = SamplerConfig(steps=c["steps"])
    n, seed = c["samples"], c["seed"]
    target = mixture.cond(label)
    truth, ref, truth_metrics = reference(mkey, mixture, label, seed, n)
    grid = density_grid(mkey, mixture, label)
    store, timing = _store(), {"sampling": 0.0, "plotting": 0.0}

    # Launch every method not in the cache, then collect in order and draw each column as it lands.
    keys, pending, got = {}, {}, {}
    for m in methods:
        gcfg = replace(gbase, method=m)
        keys[m] = (mkey, label, exact, gcfg.canonical(), scfg, n, seed, c["weak"] if m == "autoguidance" else None)
        with store["lock"]:
            got[m] = store["runs"].get(keys[m])
        if got[m] is None:
            pending[m] = _pool().submit(run_method, main_d, None if exact else models[c["weak"]], gcfg, scfg,
                                        seed, n, label, target, ref)
    t = time.perf_counter()
    columns = [_cached(store["columns"], (mkey, label, n, seed, "truth"),
                       lambda: draw_column("truth", truth, None, grid, mixture.dim))]
    timing["plotting"] += time.perf_counter() - t
    results, rows = {}, {"truth": truth_metrics}
    for m in methods:
        t = time.perf_counter()
        if m in pending:
            got[m] = _cached(store["runs"], keys[m], pending[m].result, limit=256)
        r = got[m]
        timing["sampling"] += time.perf_counter() - t
        if isinstance(r, ToyError):
            st.error(f"{m}: {r}")
            continue
        results[m], rows[m] = r, r["metrics"]
        t = time.perf_counter()
        columns.append(_cached(store["columns"], keys[m], lambda: draw_column(m, r["x"], r["trajectory"], grid,
                                                                                mixture.dim), limit=96))
        timing["plotting"] += time.perf_counter() - t
    if not results:
        return
    t = time.perf_counter()
    png = to_png(np.concatenate(columns, axis=1))                                             # [H, W·cols, 4]
    timing["plotting"] += time.perf_counter() - t
    st.image(png, caption=f"Top: samples (blue) over the exact conditional density (black). "
                          f"Bottom: sampler trajectories of {TRAJ_N} samples.")
    table = pd.DataFrame(rows).T[list(METRICS)]
    st.subheader("Distance to the exact target")
    st.dataframe(table.style.format("{:.4f}"), key="metrics")
    st.session_state["last_table"] = table
    settings = (f"{name}, class {label}, {'exact' if exact else 'trained'} denoiser, λ = {c['scale']}, "
                f"ω = {c['s2_scale']}, {c['num_drop']} block(s) dropped, N = {c['num_masks']}, interval "
                f"{tuple(c['interval'])}, {c['steps']} Heun steps, {n} samples, seed {seed}")
    st.caption(f"Settings: {settings}. Rendered in {time.perf_counter() - t0:.2f} s "
               f"({', '.join(f'{k} {v:.2f} s' for k, v in timing.items())}; "
               f"{len(pending)} of {len(methods)} method(s) sampled anew, the rest reused).")
    for m in results:
        st.markdown(f"**{m}**: {EXPLAIN[m]}")

    def csv():
        return pd.concat([pd.DataFrame(v["x"], columns=[f"x{i}" for i in range(mixture.dim)]).assign(method=k)
                          for k, v in {"truth": {"x": truth}, **results}.items()]).to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Samples (CSV)", csv, "samples.csv", "text/csv", key="dl_csv")
    c2.download_button("Figure (PNG)", png, "figure.png", "image/png", key="dl_png")
    c3.download_button("Metrics (JSON)", json.dumps({"settings": settings, "metrics": table.to_dict("index")},
                                                     indent=1), "metrics.json", "application/json", key="dl_json")


main()
