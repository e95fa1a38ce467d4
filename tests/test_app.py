"""The Streamlit app driven by AppTest: every widget, extreme values, and outputs that respond."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from toy.guidance import EXACT_METHODS, METHODS, label

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# The whole module runs in one worker (--dist loadfile): the app's compiled samplers and caches are shared.


@pytest.fixture()
def app(gmm1d_models):             # the quick gmm1d models are in the session cache: no training here
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    assert not at.exception
    return at


def table(at):
    return at.dataframe[0].value


def resampled(at):
    """How many methods the last rerun sampled anew (the rest came from the app's cache)."""
    (cap,) = [c.value for c in at.caption if "sampled anew" in c.value]
    return int(cap.split(" method(s) sampled anew")[0].rsplit("; ", 1)[1].split(" of ")[0])


def rerun(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_default_page_and_responses_to_lambda_and_omega(app):
    t0 = table(app)
    assert set(t0.index) == {"exact samples", "CFG", "Autoguidance", "S²"} and any(type(e).__name__ == "Image" for e in app.main)
    assert np.isfinite(t0.loc["CFG"].astype(float)).all()
    buttons = {b.proto.label: b.proto for b in app.get("download_button")}
    assert set(buttons) == {"Samples (CSV)", "Figure (PNG)", "Metrics (JSON)"}
    assert buttons["Samples (CSV)"].deferred_file_id and buttons["Figure (PNG)"].url   # CSV built on click
    app.slider(key="lam").set_value(5.0)
    t1 = table(rerun(app))
    assert not np.allclose(t1.loc["CFG"], t0.loc["CFG"])           # λ moves CFG
    assert resampled(app) == 3                                      # every method reads λ
    app.slider(key="omega").set_value(1.0)
    t2 = table(rerun(app))
    np.testing.assert_allclose(t2.loc["CFG"], t1.loc["CFG"])        # ω leaves CFG alone…
    assert not np.allclose(t2.loc["S²"], t1.loc["S²"])              # …and moves S²
    assert resampled(app) == 1                                      # only S² was sampled again
    app.slider(key="lam").set_value(3.0)
    app.slider(key="omega").set_value(0.25)
    np.testing.assert_array_equal(table(rerun(app)), t0)            # back to the defaults: the cached first page
    assert resampled(app) == 0
    app.slider(key="lam").set_value(5.0)
    app.slider(key="omega").set_value(1.0)
    rerun(app)
    app.slider(key="omega").set_value(0.0)
    t3 = table(rerun(app))
    np.testing.assert_allclose(t3.loc["S²"], t3.loc["CFG"], rtol=1e-3, atol=1e-3)   # ω = 0 is CFG
    app.slider(key="lam").set_value(1.0)
    app.multiselect(key="methods").set_value(["none", "cfg"])
    t4 = table(rerun(app))
    np.testing.assert_allclose(t4.loc["CFG"], t4.loc["no guidance"], rtol=1e-3, atol=1e-3)  # λ = 1 is conditional


def test_every_widget_at_its_extremes(app):
    # the methods that read the widgets below (λ: all; ω, drops, N, interval: naive S²; the fixed block;
    # the weak model): each method at each step count is one more sampler to compile
    app.multiselect(key="methods").set_value(["autoguidance", "s2-naive", "fixed-block"])
    app.select_slider(key="samples").set_value(200)
    rerun(app)          # the widgets of the settings these methods read appear (from the schema)
    keys = {w.key for w in app.sidebar if getattr(w, "key", None)}
    assert {"lam", "omega", "num_drop", "num_masks", "fixed_blocks", "interval"} <= keys and "apg_eta" not in keys
    for extremes in [dict(lam=10.0, omega=2.0, num_drop=7, num_masks=16, fixed_blocks=[7], interval=(0.0, 1.0), steps=128),
                     dict(lam=0.0, omega=0.0, num_drop=1, num_masks=1, fixed_blocks=[1], interval=(0.0, 0.0), steps=4)]:
        for key, v in extremes.items():
            (app.multiselect if key == "fixed_blocks" else app.slider)(key=key).set_value(v)
        rerun(app)
        assert len(app.error) == 0 or all("non-finite" in e.value for e in app.error)
        assert len(table(app)) + len(app.error) == 4
    app.number_input(key="seed").set_value(2**31 - 1)          # the seed range of the command line
    app.radio(key="weak").set_value("early")
    app.selectbox(key="label").set_value(1)
    rerun(app)
    assert len(table(app)) == 4


def test_exact_source_presets_and_custom_mixtures(app):
    app.radio(key="source").set_value("exact closed form")
    rerun(app)
    # on the exact denoiser Autoguidance and S² use the ideal weak model (the truth blurred by δ)
    assert set(table(app).index) == {"exact samples", "CFG", "Autoguidance", "S²"} and not app.warning
    app.multiselect(key="methods").set_value(list(METHODS))
    rerun(app)
    assert len(app.warning) == 1                                                        # naive and fixed-block S² skipped
    assert set(table(app).index) == {"exact samples", *map(label, EXACT_METHODS)}      # every baseline, explained
    assert all(any(c.value.startswith(f"**{label(m)}**") for c in app.markdown) for m in EXACT_METHODS)
    # every preset and a custom mixture on the exact source (one method: each method on each mixture is one
    # more sampler to compile, and the figures run them all on every preset)
    app.multiselect(key="methods").set_value(["cfg"])
    for preset in ["gmm2d", "tree2d", "custom"]:
        app.selectbox(key="preset").set_value(preset)
        rerun(app)
        assert set(table(app).index) == {"exact samples", "CFG"} and not app.error
    app.text_area(key="custom").set_value('{"classes": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}]}')
    rerun(app)
    assert len(app.error) == 1 and "positive definite" in app.error[0].value
    app.text_area(key="custom").set_value("{broken")
    rerun(app)
    assert len(app.error) == 1 and "JSON" in app.error[0].value
    app.multiselect(key="methods").set_value([])
    app.text_area(key="custom").set_value('{"classes": [{"weights": [1, 1], "means": [-2, 2], "covs": [1, 1]}]}')
    rerun(app)
    assert len(app.info) == 1


def images(at):
    return [e for e in at.main if type(e).__name__ == "Image"]


def test_sampler_in_time_and_mechanism_views(app):
    app.select_slider(key="samples").set_value(200)
    app.slider(key="steps").set_value(8)
    rerun(app)
    assert len(images(app)) == 3                       # the columns, the step view, the mechanism view
    assert app.slider(key="step").value == 8           # clamped to the last step
    last = str(images(app)[1].proto)
    app.slider(key="step").set_value(0)
    rerun(app)
    assert resampled(app) == 0                         # the step slider answers from stored trajectories
    first = str(images(app)[1].proto)
    assert first != last and any("Step 0 of 8" in str(i.proto) for i in images(app))
    assert any("median α" in c.value for c in app.caption)
    app.button(key="play").click()
    rerun(app)                                         # plays every step once, then shows the chosen one
    for model in ("blockdrop", "main"):
        app.radio(key="model").set_value(model)
        rerun(app)
        assert len(images(app)) == 3
    app.radio(key="source").set_value("exact closed form")
    rerun(app)
    for delta in (0.05, 3.0):                          # the ideal weak model's δ at its extremes
        app.slider(key="delta").set_value(delta)
        rerun(app)
        assert set(table(app).index) == {"exact samples", "CFG", "Autoguidance", "S²"}


def test_url_settings_and_paper_defaults(gmm1d_models):
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params.update({"lam": "5.0", "methods": "cfg,s2", "samples": "200", "steps": "8", "omega": "9",
                            "bogus": "1"})
    rerun(at)
    assert at.slider(key="lam").value == 5.0 and at.multiselect(key="methods").value == ["cfg", "s2"]
    assert at.slider(key="steps").value == 8 and at.slider(key="omega").value == 0.25
    assert len(at.warning) == 1 and "omega=9" in at.warning[0].value and "bogus" in at.warning[0].value
    assert at.query_params["lam"] in ("5", ["5"]) and "omega" not in at.query_params   # defaults stay out of the URL
    at.button(key="reset").click()
    rerun(at)
    assert at.slider(key="lam").value == 3.0 and at.multiselect(key="methods").value == ["cfg", "autoguidance", "s2"]
    assert "lam" not in at.query_params


def test_mechanism_view_compares_with_the_image_dit(app):
    app.select_slider(key="samples").set_value(200)
    app.slider(key="steps").set_value(8)
    rerun(app)
    assert len(images(app)) == 3 and not any("The DiT (" in c.value for c in app.caption)   # only on request
    app.checkbox(key="dit_mech").check()
    rerun(app)
    assert len(images(app)) == 4                       # α and β of this page's MLP and of the DiT
    (cap,) = [c.value for c in app.caption if c.value.startswith("The DiT (")]
    assert "1 of its blocks dropped" in cap and "median α" in cap
    app.select_slider(key="dit_depth").set_value(4)
    app.slider(key="lam").set_value(5.0)                # the DiT follows the page's λ
    rerun(app)
    assert len(images(app)) == 4 and any(c.value.startswith("The DiT (") for c in app.caption)


def test_other_presets_are_prepared_in_the_background_as_the_page_would_sample_them(gmm1d_models, trained,
                                                                                    monkeypatch):
    import streamlit as st
    for preset in ("gmm2d", "gmm2d4", "tree2d"):
        trained(preset)
    tables = {}
    for prepare in ("1", "0"):
        st.cache_resource.clear()                      # a fresh server: no runs, models or programs' results kept
        monkeypatch.setenv("TOY_APP_PREPARE", prepare)
        at = AppTest.from_file(APP, default_timeout=600)
        rerun(at)                                      # the first page, at the defaults
        if prepare == "1":
            at.session_state["_prepared"].result(timeout=600)    # the background work has finished
        at.selectbox(key="preset").set_value("gmm2d")
        rerun(at)
        # prepared: every run of the new preset was waiting in the cache; not prepared: all sampled now
        assert resampled(at) == (0 if prepare == "1" else 3)
        tables[prepare] = table(at)
    # what the background made is what the page samples itself
    pd.testing.assert_frame_equal(tables["1"], tables["0"])


def test_bad_custom_mixtures_show_one_inline_error(app):
    app.selectbox(key="preset").set_value("custom")
    app.radio(key="source").set_value("exact closed form")
    app.multiselect(key="methods").set_value(["cfg"])
    rerun(app)
    for text, needle in [("[" * 50_000 + "]" * 50_000, "nests too deeply"),
                         ('{"classes": [{"weights": [1], "means": [0], "covs": [1e300]}]}', "supported"),
                         ('{"classes": [{"weights": [1], "means": [[0, 0, 0]], "covs": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]}]}',
                          None)]:
        app.text_area(key="custom").set_value(text)
        rerun(app)
        if needle:
            assert len(app.error) == 1 and app.error[0].value.startswith("error:") and needle in app.error[0].value
        else:                                        # 3-D: no plots, said once, and the metrics measured in 3-D
            assert not app.error and any("3-dimensional" in i.value for i in app.info) and len(table(app)) == 2
