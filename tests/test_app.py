"""The Streamlit app driven by AppTest: every widget, extreme values, and outputs that respond."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from toy.guidance import EXACT_METHODS, METHODS, label

APP = str(Path(__file__).resolve().parents[1] / "app.py")


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
    app.multiselect(key="methods").set_value(["none", "cfg", "autoguidance", "s2-naive", "s2", "fixed-block"])
    app.select_slider(key="samples").set_value(200)
    for extremes in [dict(lam=10.0, omega=2.0, num_drop=7, num_masks=16, fixed_block=7, interval=(0.0, 1.0), steps=128),
                     dict(lam=0.0, omega=0.0, num_drop=1, num_masks=1, fixed_block=1, interval=(0.0, 0.0), steps=4)]:
        for key, v in extremes.items():
            app.slider(key=key).set_value(v)
        rerun(app)
        assert len(app.error) == 0 or all("non-finite" in e.value for e in app.error)
        assert len(table(app)) + len(app.error) == 7
    app.number_input(key="seed").set_value(1_000_000)
    app.radio(key="weak").set_value("early")
    app.selectbox(key="label").set_value(1)
    rerun(app)
    assert len(table(app)) == 7


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
    app.multiselect(key="methods").set_value(["cfg", "autoguidance", "s2"])
    for preset in ["gmm2d", "tree2d"]:
        app.selectbox(key="preset").set_value(preset)
        rerun(app)
        assert len(table(app)) == 4
    app.selectbox(key="preset").set_value("custom")
    rerun(app)
    assert len(table(app)) == 4
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
