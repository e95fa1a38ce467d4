"""Streamlit app: λ and ω sliders over every guidance method, against the exact ground truth.

Run with `streamlit run app.py`. Uses only the public functions of the `toy` package.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from toy.diffusion import SamplerConfig, sample  # noqa: E402
from toy.errors import ToyError  # noqa: E402
from toy.guidance import EXACT_METHODS, METHODS, GuidanceConfig  # noqa: E402
from toy.metrics import METRICS, evaluate  # noqa: E402
from toy.mixtures import PRESETS, from_dict, get_preset  # noqa: E402
from toy.nets import ExactDenoiser  # noqa: E402
from toy.train import train_models  # noqa: E402

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
}

# Process-wide caches: a model set per mixture, a parsed custom mixture per JSON text. Both keep
# object identity stable across reruns, so the jitted samplers never recompile for a slider move.
_MODELS: dict = {}
_CUSTOM: dict = {}


def mixture_from_controls(preset: str, custom_text: str):
    if preset != "custom":
        return get_preset(preset), preset
    if custom_text not in _CUSTOM:
        try:
            spec = json.loads(custom_text)
        except json.JSONDecodeError as e:
            raise ToyError(f"the custom mixture is not valid JSON: {e}") from None
        _CUSTOM[custom_text] = from_dict(spec, name="custom")
    return _CUSTOM[custom_text], "custom"


def models_for(mixture, name):
    if id(mixture) not in _MODELS:
        bar = st.progress(0.0, text="Training the main and weak models once (cached on disk afterwards)…")
        models = train_models(name, quick=True, mixture=mixture,
                              progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=f"Training: {text}"))
        bar.empty()
        _MODELS[id(mixture)] = (mixture, models)
    return _MODELS[id(mixture)][1]


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
                                "blocks, so only none and CFG run on it.")
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
    c["steps"] = sb.slider("Steps (Heun)", 4, 128, 32, key="steps")
    c["samples"] = sb.select_slider("Samples", [200, 500, 1000, 2000, 5000, 10000, 20000], 1000, key="samples",
                                    help="Per method. More samples: smoother plots, slower redraws.")
    c["seed"] = int(sb.number_input("Seed", 0, 1_000_000, 0, key="seed"))
    return c


_GRIDS: dict = {}
_REFS: dict = {}


def reference(mixture, label, seed, n):
    """Exact samples to show, exact reference samples to score against, and the scores of the
    first: they depend on neither λ nor ω, so a slider move reuses them."""
    k = (id(mixture), label, seed, n)
    if k not in _REFS:
        if len(_REFS) > 32:
            _REFS.clear()
        target, key = mixture.cond(label), jax.random.key(seed)
        truth = np.asarray(target.sample(jax.random.fold_in(key, 2), n))                         # [n, d]
        ref = np.asarray(target.sample(jax.random.fold_in(key, 1), max(n, 2000)))                 # [m, d]
        _REFS[k] = (truth, ref, evaluate(truth, target, ref, num_projections=64, max_points=600))
    return _REFS[k]


def density_grid(mixture, label):
    """The plot window and the true density on a grid, once per mixture and class."""
    k = (id(mixture), label)
    if k not in _GRIDS:
        target = mixture.cond(label)
        x = np.asarray(target.sample(jax.random.key(0), 20000))                               # [20000, d]
        lo, hi = x.min(0) - 1.5, x.max(0) + 1.5
        if mixture.dim == 1:
            grid = np.linspace(lo[0], hi[0], 400)[:, None].astype(np.float32)
            _GRIDS[k] = (float(lo[0]), float(hi[0]), grid[:, 0], np.asarray(target.pdf(grid)))
        else:
            gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
            pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
            _GRIDS[k] = (lo, hi, (gx, gy), np.asarray(target.logp(pts)).reshape(gx.shape))
    return _GRIDS[k]


def draw(mixture, label, results, truth, traj_n=40):
    """Row 1: samples over the true density; row 2: denoising trajectories (paper Fig. 9)."""
    names = ["truth"] + list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.0), squeeze=False)
    d = mixture.dim
    if d == 1:
        lo, hi, grid, pdf = density_grid(mixture, label)
        grid = grid[:, None]
    else:
        lo, hi, (gx, gy), lp = density_grid(mixture, label)
    for j, name in enumerate(names):
        ax, axt = axes[0, j], axes[1, j]
        x = truth if name == "truth" else results[name]["x"]
        ax.set_title(name, fontsize=10)
        if d == 1:
            ax.hist(np.clip(x[:, 0], lo, hi), bins=80, range=(lo, hi), density=True, color="C0", alpha=0.6,
                    histtype="stepfilled")
            ax.plot(grid[:, 0], pdf, "k", lw=1.2)
            ax.set_xlim(lo, hi)
        else:
            ax.contour(gx, gy, lp, levels=np.linspace(lp.max() - 12, lp.max(), 7), colors="k", linewidths=0.5)
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="C0")
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
        if name == "truth":
            axt.axis("off")
            axt.text(0.5, 0.5, "exact samples\nno trajectory", ha="center", va="center", transform=axt.transAxes)
            continue
        tr = results[name]["trajectory"][:, :traj_n]                               # [T + 1, m, d]
        if d == 1:
            axt.plot(np.arange(tr.shape[0]), tr[:, :, 0], lw=0.6, alpha=0.6)
            axt.set_ylim(lo - 4, hi + 4)
            axt.set_xlabel("sampler step")
            axt.set_ylabel("x")
        else:
            axt.contour(gx, gy, lp, levels=np.linspace(lp.max() - 12, lp.max(), 7), colors="k", linewidths=0.4)
            axt.plot(tr[1:, :, 0], tr[1:, :, 1], lw=0.6, alpha=0.6)
            axt.set_xlim(lo[0], hi[0])
            axt.set_ylim(lo[1], hi[1])
    fig.subplots_adjust(left=0.05, right=0.99, top=0.94, bottom=0.08, wspace=0.25, hspace=0.25)
    return fig


def main():
    st.set_page_config(page_title="S²-Guidance toy simulator", layout="wide")
    st.title("S²-Guidance toy simulator")
    st.caption("Guidance methods against the exact ground truth of a Gaussian mixture "
               "(paper: S²-Guidance, Stochastic Self-Guidance).")
    c = controls()
    t0 = time.perf_counter()
    try:
        mixture, name = mixture_from_controls(c["preset"], c["custom"])
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
    models = None if exact else models_for(mixture, name)
    main_d = ExactDenoiser(mixture) if exact else models["main"]
    gbase = GuidanceConfig(scale=c["scale"], s2_scale=c["s2_scale"], num_drop=c["num_drop"],
                           interval=tuple(c["interval"]), num_masks=c["num_masks"],
                           fixed_blocks=(c["fixed_block"],))
    scfg = SamplerConfig(steps=c["steps"])
    key = jax.random.key(c["seed"])
    target = mixture.cond(label)
    truth, ref, truth_metrics = reference(mixture, label, c["seed"], c["samples"])
    timing = {"sampling": 0.0, "metrics": 0.0}
    results, rows = {}, {"truth": truth_metrics}
    for m in methods:
        t = time.perf_counter()
        try:
            gcfg = replace(gbase, method=m)
            r = sample(main_d, gcfg, scfg, jax.random.fold_in(key, 3), c["samples"], label,
                       weak=None if exact else models[c["weak"]], return_trajectory=True)
        except ToyError as e:
            st.error(f"{m}: {e}")
            continue
        results[m] = {"x": np.asarray(r.x), "trajectory": np.asarray(r.trajectory)}
        timing["sampling"] += time.perf_counter() - t
        t = time.perf_counter()
        rows[m] = evaluate(results[m]["x"], target, ref, num_projections=64, max_points=600)
        timing["metrics"] += time.perf_counter() - t
    if not results:
        return
    t = time.perf_counter()
    fig = draw(mixture, label, results, truth)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=80)
    plt.close(fig)
    timing["plotting"] = time.perf_counter() - t
    st.image(png.getvalue(), caption="Top: samples (blue) over the exact conditional density (black). "
                                     "Bottom: sampler trajectories of 40 samples.")
    table = pd.DataFrame(rows).T[list(METRICS)]
    st.subheader("Distance to the exact target")
    st.dataframe(table.style.format("{:.4f}"), key="metrics")
    st.session_state["last_table"] = table
    settings = (f"{name}, class {label}, {'exact' if exact else 'trained'} denoiser, λ = {c['scale']}, "
                f"ω = {c['s2_scale']}, {c['num_drop']} block(s) dropped, N = {c['num_masks']}, interval "
                f"{tuple(c['interval'])}, {c['steps']} Heun steps, {c['samples']} samples, seed {c['seed']}")
    st.caption(f"Settings: {settings}. Rendered in {time.perf_counter() - t0:.2f} s "
               f"({', '.join(f'{k} {v:.2f} s' for k, v in timing.items())}).")
    for m in results:
        st.markdown(f"**{m}**: {EXPLAIN[m]}")
    csv = pd.concat([pd.DataFrame(v["x"], columns=[f"x{i}" for i in range(mixture.dim)]).assign(method=k)
                     for k, v in {"truth": {"x": truth}, **results}.items()]).to_csv(index=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Samples (CSV)", csv, "samples.csv", "text/csv", key="dl_csv")
    c2.download_button("Figure (PNG)", png.getvalue(), "figure.png", "image/png", key="dl_png")
    c3.download_button("Metrics (JSON)", json.dumps({"settings": settings, "metrics": table.to_dict("index")},
                                                     indent=1), "metrics.json", "application/json", key="dl_json")


main()
