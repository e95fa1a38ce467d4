"""Streamlit app: λ and ω sliders over every guidance method, against the exact ground truth.

Run with `streamlit run app.py`. UI only: sampling, scoring, drawing and the mechanism all come from
the `toy` package (toy.evaluation, toy.plotting, toy.mechanism, the method registry of toy.guidance).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import jax
import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from toy import evaluation as E
from toy import plotting as P
from toy.compare import MODELS, WEAK_MODELS
from toy.diffusion import SamplerConfig
from toy.errors import ToyError
from toy.guidance import EXACT_METHODS, METHODS, REGISTRY, GuidanceConfig, label
from toy.metrics import METRICS
from toy.mixtures import PRESETS, from_dict, get_preset
from toy.nets import ExactDenoiser
from toy.train import model_set_configs, train_models

EXAMPLE = {"classes": [{"weights": [1, 1], "means": [[-3, 0], [3, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 2]]]},
                       {"weights": [1], "means": [[0, 2]], "covs": [[[1, 0.3], [0.3, 1]]]}],
           "class_names": ["pair", "single"]}
SOURCES = {"trained network": "trained", "exact closed form": "exact"}
TRAJ_N = 40          # trajectories drawn per method


# Streamlit re-executes this script on every widget move, so module globals do not survive a rerun:
# the caches live in one st.cache_resource dict instead (shared by sessions, keyed by content, never
# by object identity). Models, exact references and density windows are made once; each method's
# samples, scores and rendered column are keyed by the fields that method reads
# (GuidanceConfig.canonical), so moving ω reruns S² alone and a slider move never recompiles.
@st.cache_resource(show_spinner=False)
def _store() -> dict:
    return {"custom": {}, "models": {}, "refs": {}, "windows": {}, "runs": {}, "columns": {}, "canvases": {},
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


def models_for(mixture, name, mkey, roles):
    def make():
        bar = st.progress(0.0, text="Training the networks once (cached on disk afterwards)…")
        models = train_models(name, quick=True, mixture=mixture, roles=roles,
                              progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=f"Training: {text}"))
        bar.empty()
        return models
    return _cached(_store()["models"], (mkey, roles), make, limit=16)


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
    c["source"] = SOURCES[sb.radio("Denoiser", list(SOURCES), key="source",
                                   help="The exact denoiser isolates guidance bias from model error. It has no "
                                        "blocks: there, Autoguidance and S² use the ideal weak model, the truth "
                                        "blurred by δ.")]
    if c["source"] == "trained":
        c["model"] = sb.radio("Network", list(MODELS), key="model", horizontal=True,
                              help="main: the network as trained; blockdrop: the same network trained with "
                                   "stochastic depth (each droppable block skipped with probability 0.1).")
        c["delta"] = 1.0
    else:
        c["model"] = "main"
        c["delta"] = sb.slider("Ideal weak model δ", 0.05, 3.0, 1.0, 0.05, key="delta",
                               help="The truth with every covariance widened by δ²I: Autoguidance's weak model "
                                    "and S²'s sub-network on the exact denoiser.")
    c["methods"] = sb.multiselect("Methods", list(METHODS), default=["cfg", "autoguidance", "s2"], key="methods",
                                  format_func=label)
    main_cfg = model_set_configs("gmm2d", quick=True)["main"]
    droppable = main_cfg.num_blocks - 1
    sb.header("Guidance")
    c["scale"] = sb.slider("Guidance scale λ", 0.0, 10.0, 3.0, 0.1, key="lam", help="λ = 1: no guidance.")
    c["s2_scale"] = sb.slider("S² scale ω", 0.0, 2.0, 0.25, 0.05, key="omega", help="ω = 0: S² is CFG.")
    c["num_drop"] = sb.slider("Blocks dropped per mask", 1, droppable, 1, key="num_drop",
                              help=f"Out of {droppable} droppable blocks (block 0 is never dropped); 1 ≈ the "
                                   f"paper's 10%.")
    c["num_masks"] = sb.slider("N sub-networks (naive S²)", 1, 16, 4, key="num_masks")
    c["fixed_block"] = sb.slider("Dropped block (fixed-block S²)", 1, droppable, 1, key="fixed_block")
    c["interval"] = sb.slider("Application interval (fraction of steps)", 0.0, 1.0, (0.1, 0.9), 0.05,
                              key="interval", help="S² acts only in this part of the sampler; CFG elsewhere.")
    c["weak"] = sb.radio("Autoguidance weak model", list(WEAK_MODELS), key="weak", horizontal=True)
    sb.header("Sampler")
    c["steps"] = sb.slider("Steps (Heun)", 4, 128, 24, key="steps",
                           help="24 Heun steps (47 network evaluations): their discretisation error is a fraction "
                                "of the sampling noise of 1000 samples (README, The app).")
    c["samples"] = sb.select_slider("Samples", [200, 500, 1000, 2000, 5000, 10000, 20000], 1000, key="samples",
                                    help="Per method. More samples: smoother plots, slower redraws.")
    c["seed"] = int(sb.number_input("Seed", 0, 1_000_000, 0, key="seed"))
    return c


def reference(mkey, mixture, label_, seed, n):
    """Exact samples to show, the reference to score against, and the scores of the first: they
    depend on neither λ nor ω, so a slider move reuses them (toy.evaluation: the same numbers as
    `compare` and the figures for the same seed and settings)."""
    def make():
        target = mixture.cond(label_)
        ref = E.make_reference(target, seed, n)
        truth = E.truth_samples(target, seed, n)
        return truth, ref, E.score(truth, ref)
    return _cached(_store()["refs"], (mkey, label_, seed, n), make, limit=32)


def window_for(mkey, mixture, label_):
    return _cached(_store()["windows"], (mkey, label_), lambda: P.density_window(mixture.cond(label_)), limit=32)


def run_method(main_d, weak, gcfg, scfg, n, label_, ref):
    """One method, in a worker thread: samples, the first TRAJ_N trajectories and the scores, or
    the ToyError that explains why it cannot run (shown inline, never a traceback)."""
    try:
        x, scores, r = E.sample_and_score(main_d, gcfg, scfg, ref, label_, n, weak=weak, return_trajectory=True)
    except ToyError as e:
        return e
    return {"x": x, "trajectory": np.asarray(r.trajectory)[:, :TRAJ_N].copy(), "metrics": scores}


COL_W, COL_H, DPI = 3.2, 6.0, 80


class ColumnCanvas:
    """One method's column, samples over the true density (top) and sampler trajectories (bottom,
    paper Fig. 9), rendered to an RGBA array. One figure per data dimension is kept and only its
    artists' data change between renders: building axes and ticks anew costs as much again."""

    def __init__(self, window: P.Window):
        self.lock = threading.Lock()
        self.fig = Figure(figsize=(COL_W, COL_H), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.ax, self.axt = self.fig.subplots(2, 1)
        self.title = self.ax.set_title("", fontsize=10)
        self.samples = P.SamplesArtist(self.ax, window)
        self.paths = P.TrajectoryArtist(self.axt, window)
        self.note = self.axt.text(0.5, 0.5, "exact samples\nno trajectory", ha="center", va="center",
                                  transform=self.axt.transAxes)
        for a in (self.ax, self.axt):
            a.xaxis.set_major_locator(MaxNLocator(5))
            a.yaxis.set_major_locator(MaxNLocator(5))
        self.fig.subplots_adjust(left=0.2, right=0.96, top=0.94, bottom=0.08, hspace=0.25)

    def render(self, name: str, x: np.ndarray, traj: np.ndarray | None, window: P.Window) -> np.ndarray:
        """x: [n, d] samples; traj: [T + 1, m, d] trajectories, or None for exact samples."""
        with self.lock:
            self.title.set_text(name)
            self.samples.set_window(window)
            self.samples.set(x)
            self.paths.set_window(window)
            self.note.set_visible(traj is None)
            self.axt.set_axis_off() if traj is None else self.axt.set_axis_on()
            self.paths.paths.set_visible(traj is not None)
            if traj is not None:
                self.paths.set(traj)
            self.fig.canvas.draw()
            return np.asarray(self.fig.canvas.buffer_rgba()).copy()                              # [H, W, 4]


def draw_column(name: str, x: np.ndarray, traj: np.ndarray | None, window: P.Window) -> np.ndarray:
    store = _store()
    with store["lock"]:
        if window.dim not in store["canvases"]:
            store["canvases"][window.dim] = ColumnCanvas(window)
        canvas = store["canvases"][window.dim]
    return canvas.render(name, x, traj, window)


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
    label_ = st.sidebar.selectbox("Class to sample", range(mixture.num_classes), key="label",
                                  format_func=lambda i: f"{i}: {mixture.class_names[i]}")
    if label_ >= mixture.num_classes:
        label_ = 0
    if not c["methods"]:
        st.info("Choose at least one method in the sidebar.")
        return
    exact = c["source"] == "exact"
    methods = [m for m in c["methods"] if not exact or m in EXACT_METHODS]
    skipped = [m for m in c["methods"] if m not in methods]
    if skipped:
        st.warning(f"{', '.join(label(m) for m in skipped)} need a network's blocks; the exact denoiser runs "
                   f"{', '.join(label(m) for m in EXACT_METHODS)}. Switch the denoiser to 'trained network' to see them.")
    if not methods:
        return
    if exact:
        main_d = ExactDenoiser(mixture, ideal_blur=c["delta"])
        weak = main_d.weak()
    else:
        models = models_for(mixture, name, mkey, tuple(dict.fromkeys((c["model"], c["weak"]))))
        main_d, weak = models[c["model"]], models[c["weak"]]
    gbase = GuidanceConfig(scale=c["scale"], s2_scale=c["s2_scale"], num_drop=c["num_drop"],
                           interval=tuple(c["interval"]), num_masks=c["num_masks"],
                           fixed_blocks=(c["fixed_block"],))
    scfg = SamplerConfig(steps=c["steps"])
    n, seed = c["samples"], c["seed"]
    truth, ref, truth_metrics = reference(mkey, mixture, label_, seed, n)
    window = window_for(mkey, mixture, label_)
    store, timing = _store(), {"sampling": 0.0, "plotting": 0.0}
    source_key = ("exact", c["delta"]) if exact else ("trained", c["model"])

    # Launch every method not in the cache, then collect in order and draw each column as it lands.
    keys, pending, got = {}, {}, {}
    for m in methods:
        gcfg = replace(gbase, method=m)
        uses_weak = "weak" in REGISTRY[m].needs and not exact
        keys[m] = (mkey, label_, source_key, gcfg.canonical(), scfg, n, seed, c["weak"] if uses_weak else None)
        with store["lock"]:
            got[m] = store["runs"].get(keys[m])
        if got[m] is None:
            pending[m] = _pool().submit(run_method, main_d, weak, gcfg, scfg, n, label_, ref)
    t = time.perf_counter()
    columns = [_cached(store["columns"], (mkey, label_, n, seed, "truth"),
                       lambda: draw_column("exact samples", truth, None, window))]
    timing["plotting"] += time.perf_counter() - t
    results, rows = {}, {"exact samples": truth_metrics}
    for m in methods:
        t = time.perf_counter()
        if m in pending:
            got[m] = _cached(store["runs"], keys[m], pending[m].result, limit=256)
        r = got[m]
        timing["sampling"] += time.perf_counter() - t
        if isinstance(r, ToyError):
            st.error(f"{label(m)}: {r}")
            continue
        results[m], rows[label(m)] = r, r["metrics"]
        t = time.perf_counter()
        columns.append(_cached(store["columns"], keys[m], lambda: draw_column(label(m), r["x"], r["trajectory"],
                                                                                window), limit=96))
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
    source = f"exact denoiser (ideal weak model δ = {c['delta']})" if exact else f"trained {c['model']} network"
    settings = (f"{name}, class {label_}, {source}, λ = {c['scale']}, "
                f"ω = {c['s2_scale']}, {c['num_drop']} block(s) dropped, N = {c['num_masks']}, interval "
                f"{tuple(c['interval'])}, {c['steps']} Heun steps, {n} samples, seed {seed}")
    st.caption(f"Settings: {settings}. Rendered in {time.perf_counter() - t0:.2f} s "
               f"({', '.join(f'{k} {v:.2f} s' for k, v in timing.items())}; "
               f"{len(pending)} of {len(methods)} method(s) sampled anew, the rest reused).")
    for m in results:
        st.markdown(f"**{label(m)}**: {REGISTRY[m].explain}")

    def csv():
        return pd.concat([pd.DataFrame(v["x"], columns=[f"x{i}" for i in range(mixture.dim)]).assign(method=k)
                          for k, v in {"exact samples": {"x": truth}, **results}.items()]).to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Samples (CSV)", csv, "samples.csv", "text/csv", key="dl_csv")
    c2.download_button("Figure (PNG)", png, "figure.png", "image/png", key="dl_png")
    c3.download_button("Metrics (JSON)", json.dumps({"settings": settings, "metrics": table.to_dict("index")},
                                                     indent=1), "metrics.json", "application/json", key="dl_json")


main()
