"""Streamlit app: λ and ω sliders over every guidance method, against the exact ground truth, with the
sampler in time and the S² mechanism on screen.

Run with `streamlit run app.py` (`TOY_PLUGINS=FILE1:FILE2` adds guidance methods from outside the
package). Layout only: the widgets, their ranges and the URL codec come from the settings schema
(toy.settings), the methods from the registry (toy.guidance), sampling and scoring from toy.evaluation,
pictures from toy.canvases, the mechanism from toy.mechanism. Every setting is mirrored in the URL, so
a reload or a shared link reproduces the view.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import jax
import numpy as np
import pandas as pd
import streamlit as st

from toy import canvases as V
from toy import evaluation as E
from toy import mechanism as M
from toy import plotting as P
from toy import plugins
from toy.cache import LRU
from toy.compare import MODELS, WEAK_MODELS
from toy.diffusion import SamplerConfig, initial_noise
from toy.errors import ToyError
from toy.guidance import EXACT_METHODS, METHODS, REGISTRY, GuidanceConfig, interval_problem, label
from toy.metrics import METRICS, metric_label
from toy.nets import ExactDenoiser
from toy.presets import EXAMPLE_SPEC, PRESETS, get_preset, parse_json
from toy.runtime import enable_compilation_cache, setup
from toy.settings import SETTINGS, Setting, paper_defaults_text, safe_text
from toy.train import train_models
from toy.ui import View, downloads, show_mechanism, widget

setup()              # one CPU device per core for the samplers, before JAX starts
# Every program, however small, goes to the persistent cache (min_compile_s=0): a second launch loads
# them all instead of compiling any (with the default, those under 0.2 s were compiled at every launch).
enable_compilation_cache(min_compile_s=0.0)

SOURCES = {"trained network": "trained", "exact closed form": "exact"}
MECH_MASKS, MECH_STATES = 8, 200
PREPARE = os.environ.get("TOY_APP_PREPARE", "1") != "0"   # the other presets in the background after the first page
IDLE_S = 1.0                                               # … each piece once no page has run for this long        # the mechanism view: masks per σ, CFG sampler states per σ
# The view's own settings, declared with the same class as the simulator's (their URL codec is the same).
VIEW = [Setting("preset", "gmm1d", kind="choice", choices=(*PRESETS, "custom"), group="app"),
        Setting("source", "trained network", kind="choice", choices=tuple(SOURCES), group="app"),
        Setting("model", "main", kind="choice", choices=MODELS, group="app"),
        Setting("weak", "small", kind="choice", choices=WEAK_MODELS, group="app"),
        SETTINGS["samples"], SETTINGS["steps"], SETTINGS["seed"], SETTINGS["label"], SETTINGS["ideal_blur"]]
PAGE = View(VIEW, {"methods": ["cfg", "autoguidance", "s2"], "custom": json.dumps(EXAMPLE_SPEC, indent=1)},
            Setting("step", SETTINGS["steps"].start, 0, 128, kind="int", group="app"))   # the sampler-in-time slider


@st.cache_resource(show_spinner=False)
def store() -> dict[str, LRU]:
    # Streamlit re-executes this script on every move: the caches live here, shared by sessions, keyed by
    # content. Runs are keyed by the settings a method reads (GuidanceConfig.canonical): moving ω reruns S²
    # alone, and a slider move never recompiles.
    return {"custom": LRU(16), "models": LRU(16), "refs": LRU(32), "windows": LRU(256), "runs": LRU(256),
            "columns": LRU(96), "canvases": LRU(32), "mechanism": LRU(64)}


@st.cache_resource(show_spinner=False)
def activity() -> dict:
    # When a page last ran (any session): background work waits for the user to pause.
    return {"t": 0.0}


@st.cache_resource(show_spinner=False)
def background() -> ThreadPoolExecutor:
    # One thread for work nobody waits for (the other presets): it never takes a sampler's worker.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="toy-background")


@st.cache_resource(show_spinner=False)
def pool() -> ThreadPoolExecutor:
    # Each sampler releases the GIL while XLA runs, so methods sample side by side and the page draws meanwhile.
    return ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="toy-sampler")


def sidebar() -> dict:
    sb, c = st.sidebar, {}
    sb.button("Paper defaults", on_click=PAGE.reset, key="reset", help=paper_defaults_text())
    sb.header("Target")
    c["preset"] = sb.selectbox("Mixture", VIEW[0].choices, key="preset", help="gmm1d: modes at ±4 (paper Fig. 3 "
                               "top); gmm2d: modes at (±4, ±4); gmm2d4: four equal modes at (±4, ±4), another class "
                               "on the right (mode balance); tree2d: thin branches; custom: a JSON mixture.")
    c["custom"] = sb.text_area("Custom mixture (JSON)", key="custom", height=220) if c["preset"] == "custom" else ""
    c["source"] = SOURCES[sb.radio("Denoiser", list(SOURCES), key="source", help="The exact denoiser isolates "
                                   "guidance bias from model error; there Autoguidance and S² use the ideal weak model.")]
    exact = c["source"] == "exact"
    c["model"] = st.session_state["model"] if exact else sb.radio("Network", MODELS, key="model", horizontal=True)
    c["delta"] = widget(sb, SETTINGS["ideal_blur"]) if exact else st.session_state["delta"]
    c["methods"] = sb.multiselect("Methods", list(METHODS), key="methods", format_func=label)
    sb.header("Guidance")
    reads = {n for m in c["methods"] if m in REGISTRY for n in REGISTRY[m].params} | {"scale"}
    c["guidance"] = {n: widget(sb, SETTINGS[n]) for n in SETTINGS if SETTINGS[n].group == "guidance"
                     and n in reads and SETTINGS[n].widget}
    if "weak" in {p for m in c["methods"] if m in REGISTRY for p in REGISTRY[m].needs} and not exact:
        c["weak"] = sb.radio("Autoguidance weak model", WEAK_MODELS, key="weak", horizontal=True)
    sb.header("Sampler")
    for n in ("steps", "samples", "seed"):
        c[n] = widget(sb, SETTINGS[n])
    return c


def mixture_for(c):
    """(mixture, name for the model cache, content key for the app caches); pasted text is read by the
    same guarded reader as a mixture file on the command line."""
    if c["preset"] != "custom":
        return get_preset(c["preset"]), c["preset"], c["preset"]
    text = safe_text(c["custom"], "the custom mixture", limit=100_000)
    return store()["custom"].get(text, lambda: parse_json(text, "the custom mixture")), "custom", ("custom", text)


def denoisers(c, mixture, name, mkey):
    exact_d = ExactDenoiser(mixture, ideal_blur=c["delta"])
    if c["source"] == "exact":
        return exact_d, exact_d.weak(), exact_d
    slot = st.empty()        # always there: the page keeps its shape (a focused slider stays mounted on a rerun)
    models = networks(name, mixture, mkey, roles_of(c), slot)
    return models[c["model"]], models[c.get("weak", "small")], exact_d


def networks(name, mixture, mkey, roles: tuple, slot=None) -> dict:
    """The trained networks of `roles` (loaded from the shipped weights or the cache, trained once
    otherwise), kept in the app's store; a progress bar in `slot` while they are made (none in the
    background)."""
    def make():
        bar = slot.progress(0.0, text="Training the networks once (cached on disk afterwards)…") \
            if slot is not None else None
        try:
            return train_models(name, quick=True, mixture=mixture, roles=roles, progress=False if bar is None else (
                lambda f, t: bar.progress(min(max(f, 0.0), 1.0), text=f"Training: {t}")))
        finally:
            if bar is not None:
                bar.empty()
    return store()["models"].get((mkey, roles), make)


def roles_of(c) -> tuple:
    """The networks a page needs: the guided one and Autoguidance's weak one."""
    return tuple(dict.fromkeys((c["model"], c.get("weak", "small"))))


def run_method(main_d, weak, gcfg, scfg, seed, n, label_, ref_ready: Future):
    """One method, in a worker thread: samples, trajectories and scores, or the error that explains why it
    cannot run (shown inline, never a traceback). The scores wait for the reference."""
    try:
        r = E.draw(main_d, gcfg, scfg, seed, label_, n, weak=weak, return_trajectory=True)
        x = np.asarray(r.x)                                                                  # [n, d]
        return {"x": x, "trajectory": np.asarray(r.trajectory), "sigmas": r.sigmas, "metrics": E.score(x, ref_ready.result())}
    except ToyError as e:
        return e
    except Exception as e:  # noqa: BLE001 - one method's failure is shown inline; the page stays usable
        return ToyError(f"{type(e).__name__}: {e}")


def reference(mkey, mixture, label_, seed, n):
    """Exact samples to show, the reference, their scores and standard normal noise of their shape
    (for exact samples of p_σ(x | c) in the step view): none depends on λ or ω."""
    def make():
        target = mixture.cond(label_)
        ref = E.make_reference(target, seed, n)
        truth = E.truth_samples(target, seed, n)
        return truth, ref, E.score(truth, ref), np.asarray(initial_noise(jax.random.key(seed), n, mixture.dim))
    return store()["refs"].get((mkey, label_, seed, n), make)


def window(mkey, mixture, label_, sigma=0.0):
    return store()["windows"].get((mkey, label_, round(float(sigma), 6)), lambda: P.density_window(mixture.cond(label_), sigma))


def canvas(key, make):
    return store()["canvases"].get(key, make)


def run_key(c, mkey, label_, gcfg, scfg) -> tuple:
    """What a run is a function of: the app's cache key for it."""
    return (mkey, label_, c["source"], c["model"], c["delta"] if c["source"] == "exact" else None, gcfg.canonical(),
            scfg, c["samples"], c["seed"], c.get("weak") if REGISTRY[gcfg.method].uses_weak else None)


def start_runs(methods, c, main_d, weak, gbase, scfg, label_, ref_ready, mkey):
    """Every method not in the cache (and CFG, which the mechanism view reads), submitted to the pool:
    {method: (key, cached run or the future of a new one)}."""
    out = {}
    for m in dict.fromkeys(methods + ["cfg"]):
        gcfg = replace(gbase, method=m)
        key = run_key(c, mkey, label_, gcfg, scfg)
        hit = store()["runs"].peek(key)
        out[m] = (key, hit if hit is not None else pool().submit(run_method, main_d, weak, gcfg, scfg, c["seed"],
                                                                 c["samples"], label_, ref_ready))
    return out


def prepare_presets(c, methods, label_, gbase, scfg) -> Future:
    """The other presets at these settings, made in the background after the first picture: their
    networks loaded, references made and runs sampled and stored under the keys the page uses (the same
    functions: a first visit to another preset shows exactly what sampling there gives, at once). Each
    piece waits until no page has run for IDLE_S seconds, so that the work never slows a slider."""
    last = activity()

    def idle():
        while time.monotonic() - last["t"] < IDLE_S:
            time.sleep(0.1)

    def work():
        for preset in PRESETS:
            if preset == c["preset"]:
                continue
            mixture, mkey = get_preset(preset), preset
            if label_ >= mixture.num_classes:
                continue
            idle()
            if c["source"] == "exact":
                main_d = ExactDenoiser(mixture, ideal_blur=c["delta"])
                weak = main_d.weak()
            else:
                models = networks(preset, mixture, mkey, roles_of(c))
                main_d, weak = models[c["model"]], models[c.get("weak", "small")]
            ref = Future()
            ref.set_result(reference(mkey, mixture, label_, c["seed"], c["samples"])[1])
            for m in dict.fromkeys(methods + ["cfg"]):
                gcfg = replace(gbase, method=m)
                key = run_key(c, mkey, label_, gcfg, scfg)
                if store()["runs"].peek(key) is None:
                    idle()
                    r = run_method(main_d, weak, gcfg, scfg, c["seed"], c["samples"], label_, ref)
                    if not isinstance(r, ToyError):
                        store()["runs"].put(key, r)
    return background().submit(work)


def mechanism_jobs(main_d, exact_d, mixture, label_, gbase, sigma, mkey, cfg_job):
    """The guidance terms at σ (no sampler run needed) and the decomposition along CFG's run, in the pool."""
    def terms():
        w = window(mkey, mixture, label_, sigma)
        grid = M.grid_for(w.lo, w.hi)
        return grid, M.guidance_terms(main_d, exact_d, grid, sigma, label_, gbase, masks=MECH_MASKS, key=jax.random.key(0)), w

    def decomposition():
        run = cfg_job[1].result() if isinstance(cfg_job[1], Future) else cfg_job[1]
        if isinstance(run, ToyError):
            return run
        idx = np.linspace(0, run["x"].shape[0] - 1, min(MECH_STATES, run["x"].shape[0])).astype(int)
        return M.decompose_states(main_d, {"cos_error": exact_d}, run["trajectory"][:, idx], run["sigmas"], label_, gbase,
                                  masks=MECH_MASKS, key=jax.random.key(0))
    drop = (gbase.num_drop, gbase.drop_ratio, gbase.exclude)
    t = pool().submit(store()["mechanism"].get, ("terms", mkey, label_, cfg_job[0][2:5], *drop, gbase.scale,
                                                 gbase.s2_scale, round(sigma, 6)), terms)
    d = pool().submit(store()["mechanism"].get, ("decomposition", cfg_job[0], *drop), decomposition)
    return t, d


def mechanism_view(mixture, cfg_run, mech, gbase, sigma) -> None:
    (grid, values, w), dec = mech[0].result(), mech[1].result()
    image = None if isinstance(dec, ToyError) or isinstance(cfg_run, ToyError) else canvas(
        ("mechanism", mixture.dim), lambda: V.MechanismCanvas(mixture.dim)).render(values, grid, w, dec, sigma)
    show_mechanism(image, cfg_run, dec, gbase.interval, sigma, MECH_STATES, MECH_MASKS)


def dit_view(gbase, mech) -> None:
    """The image DiT's α and β beside this page's network, on request (it loads a DiT and samples)."""
    if not st.checkbox("Compare with a transformer: the image DiT on digits", key="dit_mech",
                       help="The same decomposition along the DiT's own CFG sampler, at this λ and drop setting."):
        return
    from toy.images.mechanism import DEPTHS, app_series
    depth = st.select_slider("DiT depth (blocks)", list(DEPTHS), value=DEPTHS[-1], key="dit_depth")
    try:
        with st.spinner(f"the DiT of depth {depth}: sampling and decomposing"):
            dit = store()["mechanism"].get(("dit", depth, gbase.scale, gbase.num_drop, gbase.drop_ratio, gbase.exclude),
                                           lambda: app_series(depth, replace(gbase, method="cfg")))
    except ToyError as e:
        st.warning(f"The DiT cannot use these settings: {e}")
        return
    dec = mech[1].result()
    curves = {"this page's network": dec} if isinstance(dec, dict) else {}
    curves[f"DiT, {depth} blocks (digits)"] = dit
    inside = M.acting(dit, "sigmas", gbase.interval)                                          # σ where S² acts
    st.image(V.to_png(canvas(("series",), V.SeriesCanvas).render(curves, (inside.min(), inside.max()))))
    med = dit["interval_medians"]
    st.caption(f"The DiT ({dit['blocks_dropped']} of its blocks dropped per mask): where S² acts, median α = "
               f"{med['alpha']:.2f}, β = {med['beta']:.3f}: {M.verdict(med['alpha'], med['beta'])}. Grey: where S² acts.")


def class_index(value, num_classes: int) -> int:
    """The class selector's value as a class index: after the class names change (another preset), the
    browser can send back the old formatted label ("0: modes ±4") instead of the index."""
    head = str(value).split(":")[0].strip()
    i = value if isinstance(value, int) else int(head) if head.isdigit() else 0
    return i if 0 <= i < num_classes else 0


def step_view(slot, mkey, mixture, label_, results, truth, noise, t_, T):
    sigmas = next(iter(results.values()))["sigmas"]
    w = window(mkey, mixture, label_, float(sigmas[t_]))
    panels = [("exact p_σ(x | c)", truth + np.float32(sigmas[t_]) * noise)]                           # [n, d]
    panels += [(label(m), r["trajectory"][t_]) for m, r in results.items()]
    img = canvas(("step", mixture.dim, len(panels)), lambda: V.StepCanvas(w, len(panels))).render(panels, w)
    slot.image(V.to_png(img), caption=f"Step {t_} of {T}: σ = {sigmas[t_]:.3g}. Each method's states over the exact "
                                      f"noised density p_σ(x | c) (covariances + σ²I).")


def page(c, mixture, name, mkey, methods, t0, timing):
    label_ = st.session_state["label"]
    main_d, weak, exact_d = denoisers(c, mixture, name, mkey)
    gbase = GuidanceConfig().with_settings(**c["guidance"]).validate()
    scfg, n, T, plots = SamplerConfig(steps=c["steps"]), c["samples"], c["steps"], mixture.dim <= 2
    for problem in dict.fromkeys(filter(None, (interval_problem(replace(gbase, method=m), T) for m in methods))):
        st.warning(problem.replace("; widen the interval or change --steps", ": widen the interval"))
    if st.session_state["step"] > T or st.session_state["step"] == st.session_state.get("_steps_before"):
        st.session_state["step"] = T               # clamped, or kept at the last step when the count moves
    st.session_state["_steps_before"] = T
    ref_ready = Future()
    try:      # the samplers start first; this thread makes the reference meanwhile
        jobs = start_runs(methods, c, main_d, weak, gbase, scfg, label_, ref_ready, mkey)
        truth, ref, truth_metrics, noise = reference(mkey, mixture, label_, c["seed"], n)
        ref_ready.set_result(ref)
    finally:
        if not ref_ready.done():           # an error or a rerun: workers waiting on it return instead of hanging
            ref_ready.set_exception(ToyError("this run of the page stopped before its reference was made"))
    if not plots:
        st.info(f"This mixture is {mixture.dim}-dimensional: the plots show 1D and 2D mixtures only; the metrics "
                "below are measured in all dimensions.")
    w = window(mkey, mixture, label_) if plots else None
    errors_box, cols_slot = st.container(), st.empty()
    columns = {"truth": store()["columns"].get((mkey, label_, n, c["seed"], "truth"), lambda: canvas(
        ("column", mixture.dim), lambda: V.ColumnCanvas(w)).render("exact samples", truth, None, w))} if plots else {}
    results = collect(jobs, methods, mixture, w, columns, errors_box, timing)
    if not results:
        return
    png = None
    if plots:
        t = time.perf_counter()
        png = V.to_png(np.concatenate([columns["truth"]] + [columns[m] for m in results], axis=1))   # [H, W·cols, 4]
        cols_slot.image(png, caption=f"Top: samples (blue) over the exact conditional density. Bottom: sampler "
                                     f"trajectories of {V.TRAJ_N} samples.")
        timing["drawing"] += time.perf_counter() - t
        in_time(Moment(mkey, mixture, label_, results, truth, noise, T, main_d, exact_d, gbase, scfg, jobs["cfg"]),
                timing)
    summary(c, name, label_, methods, jobs, results, truth, truth_metrics, png, mixture, t0, timing)
    if PREPARE and not st.session_state.get("_prepared") and c["preset"] != "custom":
        st.session_state["_prepared"] = prepare_presets(c, methods, label_, gbase, scfg)   # once per session


@dataclass(frozen=True, eq=False)
class Moment:
    """What the sampler-in-time fragment reads from the page's last full run."""
    mkey: tuple
    mixture: object
    label: int
    results: dict
    truth: np.ndarray
    noise: np.ndarray
    T: int
    main_d: object
    exact_d: object
    gbase: GuidanceConfig
    scfg: SamplerConfig
    cfg_job: tuple


@st.fragment
def in_time(m: Moment, timing: dict) -> None:
    """The sampler in time and the mechanism at the chosen step. A fragment: moving the step slider (or
    ▶ Play) reruns this part alone; the samples' picture above is already on the page, so the
    mechanism's programs never delay it."""
    activity()["t"] = time.monotonic()
    st.subheader("The sampler in time")
    col_a, col_b = st.columns([5, 1])
    col_a.slider("Sampler step t (0: pure noise at σ_max; the last: the samples)", 0, m.T, key="step")
    play = col_b.button("▶ Play", key="play", help="Run the sampler from noise to samples, step by step.")
    step_slot = st.empty()
    t = time.perf_counter()
    for t_ in (range(m.T + 1) if play else [st.session_state["step"]]):
        step_view(step_slot, m.mkey, m.mixture, m.label, m.results, m.truth, m.noise, t_, m.T)
        time.sleep(0.12 if play else 0)
    timing["drawing"] += time.perf_counter() - t
    st.subheader("The mechanism at this step")
    t = time.perf_counter()
    sigma = float(m.scfg.sigmas(m.main_d.sigma_data)[min(st.session_state["step"], m.T - 1)])
    mech = mechanism_jobs(m.main_d, m.exact_d, m.mixture, m.label, m.gbase, sigma, m.mkey, m.cfg_job)
    cfg_run = m.cfg_job[1].result() if isinstance(m.cfg_job[1], Future) else m.cfg_job[1]
    mechanism_view(m.mixture, cfg_run, mech, m.gbase, sigma)
    timing["mechanism view"] += time.perf_counter() - t
    dit_view(m.gbase, mech)
    PAGE.write_url()                       # a step move reruns only this part: the link follows it here


def collect(jobs, methods, mixture, w, columns, errors_box, timing) -> dict:
    """Each run as it lands: errors inline, columns drawn while the other methods still sample. Returns
    the runs of `methods`, in the sidebar's order."""
    results = {}
    for m in ["cfg"] + [m for m in methods if m != "cfg"]:
        key, job = jobs[m]
        t = time.perf_counter()
        r = store()["runs"].put(key, job.result()) if isinstance(job, Future) else job
        timing["waiting for the samplers"] += time.perf_counter() - t
        t = time.perf_counter()
        if isinstance(r, ToyError) and m in methods:
            errors_box.error(f"{label(m)}: error: {r}")
        elif m in methods:
            results[m] = r
            if w is not None:
                columns[m] = store()["columns"].get(key, lambda: canvas(("column", mixture.dim), lambda: V.ColumnCanvas(
                    w)).render(label(m), r["x"], r["trajectory"], w))
        timing["drawing"] += time.perf_counter() - t
    return {m: results[m] for m in methods if m in results}


def summary(c, name, label_, methods, jobs, results, truth, truth_metrics, png, mixture, t0, timing) -> None:
    """The metrics table, the settings and timing caption, each method's explanation, the downloads."""
    rows = {"exact samples": truth_metrics, **{label(m): r["metrics"] for m, r in results.items()}}
    table = pd.DataFrame(rows).T[list(METRICS)]
    st.subheader("Distance to the exact target")
    st.dataframe(table, key="metrics", column_config={k: st.column_config.NumberColumn(metric_label(k), format="%.4f")
                                                      for k in METRICS})
    source = f"exact denoiser (ideal weak model δ = {c['delta']})" if c["source"] == "exact" else f"trained {c['model']} network"
    shown = ", ".join(f"{SETTINGS[k].symbol or SETTINGS[k].label} = {SETTINGS[k].to_text(v)}" for k, v in c["guidance"].items())
    settings = f"{name}, class {label_}, {source}, {shown}, {c['steps']} Heun steps, {c['samples']} samples, seed {c['seed']}"
    fresh = sum(isinstance(jobs[m][1], Future) for m in methods)
    st.caption(f"Settings: {settings}. Rendered in {time.perf_counter() - t0:.2f} s "
               f"({', '.join(f'{k} {v:.2f} s' for k, v in timing.items())}; "
               f"{fresh} of {len(methods)} method(s) sampled anew, the rest reused).")
    for m in results:
        st.markdown(f"**{label(m)}**: {REGISTRY[m].explain}")
    downloads(mixture, truth, results, png, table, settings)


def main():
    st.set_page_config(page_title="S²-Guidance toy simulator", layout="wide", menu_items={})
    activity()["t"] = time.monotonic()
    try:
        plugins.from_env()
    except ToyError as e:
        st.error(f"error: {e}")
    for k, v in PAGE.defaults().items():
        st.session_state.setdefault(k, list(v) if isinstance(v, tuple) else v)
    ignored = PAGE.read_url()
    st.title("S²-Guidance toy simulator")
    st.caption("Guidance methods against the exact ground truth of a Gaussian mixture "
               "(paper: S²-Guidance, Stochastic Self Guidance, arXiv:2508.12880).")
    if ignored:
        st.warning(f"Ignored in the link (unknown or out of range): {', '.join(ignored)}")
    c, t0 = sidebar(), time.perf_counter()
    try:
        mixture, name, mkey = mixture_for(c)
        st.session_state["label"] = class_index(st.session_state["label"], mixture.num_classes)
        st.sidebar.selectbox("Class to sample", list(range(mixture.num_classes)), key="label",
                             format_func=lambda i: f"{i}: {mixture.class_names[i]}")
        exact = c["source"] == "exact"
        methods = [m for m in c["methods"] if m in REGISTRY and (not exact or m in EXACT_METHODS)]
        skipped = [m for m in c["methods"] if m not in methods]
        if skipped:
            st.warning(f"{', '.join(label(m) for m in skipped)} need a network's blocks; the exact denoiser runs "
                       f"{', '.join(label(m) for m in EXACT_METHODS)}. Switch the denoiser to 'trained network' to see them.")
        if not c["methods"]:
            st.info("Choose at least one method in the sidebar.")
        elif methods:
            page(c, mixture, name, mkey, methods, t0, {"waiting for the samplers": 0.0, "drawing": 0.0,
                                                       "mechanism view": 0.0})
    except ToyError as e:
        st.error(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - never a traceback on the page: one line, and the page stays usable
        st.error(f"error: {type(e).__name__}: {e}")
    PAGE.write_url()
    activity()["t"] = time.monotonic()


main()
