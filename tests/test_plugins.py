"""Guidance methods from outside the package: a user's file through the command line, the figure
script and the app, scored as its formula implies; bad plugin files are one error line."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from toy import plugins
from toy.__main__ import main
from toy.diffusion import SamplerConfig, sample
from toy.guidance import METHODS, REGISTRY, GuidanceConfig
from toy.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
HALF = '''
from toy.guidance import register, Setting

@register("cfg-half", label="half CFG", needs=("uncond", "cond"), reads=("scale", "fraction"),
          settings=[Setting("fraction", default=0.5, low=0.0, high=1.0, help="share of λ used")],
          explain="CFG at a fraction of λ.", source="example")
def cfg_half(d_uncond, d_cond, *, scale, fraction):
    return d_uncond + fraction * scale * (d_cond - d_uncond)
'''


@pytest.fixture()
def half(tmp_path):
    p = tmp_path / "user_plugin.py"          # a file of the user's, outside the repository
    p.write_text(HALF)
    yield p
    plugins.unload_all()
    assert "cfg-half" not in REGISTRY and "fraction" not in SETTINGS


def test_a_plugged_in_method_scores_as_its_formula_implies(half, tmp_path, capsys, gmm1d_models):
    out = tmp_path / "out.json"
    base = ["compare", "--preset", "gmm1d", "--quick", "--seeds", "2", "--samples", "300", "--steps", "8"]
    assert main(base + ["--plugin", str(half), "--methods", "cfg,cfg-half", "--guidance-scale", "4",
                        "--set", "fraction=0.5", "--json", str(out)]) == 0
    assert main(base + ["--methods", "cfg", "--guidance-scale", "2", "--json", str(tmp_path / "ref.json")]) == 0
    got, ref = json.loads(out.read_text()), json.loads((tmp_path / "ref.json").read_text())
    assert got["methods"]["cfg-half"] == ref["methods"]["cfg"]             # half of λ = 4 is λ = 2, exactly
    assert got["methods"]["cfg"] != ref["methods"]["cfg"]
    assert "half CFG" in capsys.readouterr().out or "cfg-half" in json.dumps(got)
    # the setting is a runtime input read by name: a quarter of λ = 4 is CFG at λ = 1, plain conditional sampling
    main_d = gmm1d_models["main"]
    x = lambda g: np.asarray(sample(main_d, g, SamplerConfig(steps=6), jax.random.key(0), 64, 0).x)  # noqa: E731
    np.testing.assert_array_equal(x(GuidanceConfig(method="cfg-half", scale=4.0).with_settings(fraction=0.25)),
                                  x(GuidanceConfig(method="cfg", scale=1.0)))


def test_the_shipped_example_matches_a_hand_computation():
    plugins.load(ROOT / "examples" / "cfg_rescale.py")
    try:
        spec = REGISTRY["cfg-rescale"]
        k = jax.random.split(jax.random.key(0), 2)
        du, dc = (np.asarray(jax.random.normal(ki, (5, 2))) for ki in k)
        d = np.asarray(spec.fn(du, dc, scale=3.0, rescale_phi=0.7))
        cfg = du + 3.0 * (dc - du)
        rms = lambda a: np.sqrt((a ** 2).mean(1, keepdims=True))          # noqa: E731
        np.testing.assert_allclose(d, 0.7 * cfg * rms(dc) / rms(cfg) + 0.3 * cfg, rtol=1e-5)
        np.testing.assert_allclose(spec.fn(du, dc, scale=3.0, rescale_phi=0.0), cfg, rtol=1e-5)   # φ = 0: CFG
    finally:
        plugins.unload_all()


@pytest.mark.parametrize("source,needle", [
    ("raise RuntimeError('boom')", "failed to import"),
    ("def broken(:\n", "failed to import (line 1)"),
    ("x = 1", "registers no guidance method"),
    (HALF + HALF.replace("def cfg_half", "def again"), "declared twice"),
    (HALF.replace('"cfg-half"', '"cfg"'), "built-in method"),
    (HALF.replace("low=0.0, high=1.0, ", ""), "declares no range"),
    (HALF.replace('Setting("fraction"', 'Setting("scale"'), "already declared"),
    (HALF.replace("*, scale, fraction", "*, scale"), "must take"),
])
def test_bad_plugin_files_are_one_error_line_before_any_work(tmp_path, capsys, source, needle):
    p = tmp_path / "bad.py"
    p.write_text(source)
    before = tuple(METHODS), dict(SETTINGS)
    code = main(["compare", "--plugin", str(p), "--methods", "cfg", "--quick", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert (tuple(METHODS), dict(SETTINGS)) == before                       # nothing left registered
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_set_names_a_known_setting(half, capsys):
    for argv, needle in [(["--set", "nope=1"], "unknown setting"), (["--set", "fraction=2"], "[0.0, 1.0]"),
                         (["--set", "fraction"], "NAME=VALUE"), (["--set", "steps=4"], "--steps")]:
        assert main(["compare", "--plugin", str(half), "--methods", "cfg-half", "--quick"] + argv) == 2
        assert needle in capsys.readouterr().err


def test_figures_and_the_app_take_plugins(half, tmp_path, gmm1d_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from toy import figures
    assert figures.main(["--quick", "--only", "fig3_1d", "--plugin", str(half), "--set", "fraction=0.25",
                         "--out", str(tmp_path / "f")]) == 0
    assert figures.main(["--quick", "--only", "fig3_1d", "--set", "scale=2", "--out", str(tmp_path / "g")]) == 2
    monkeypatch.setenv("TOY_PLUGINS", str(half))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params.update({"methods": "cfg,cfg-half", "samples": "200", "steps": "8", "fraction": "0.25"})
    at.run()
    assert not at.exception and not at.error
    assert at.slider(key="fraction").value == 0.25                          # its setting is a widget
    assert set(at.dataframe[0].value.index) == {"exact samples", "CFG", "half CFG"}
    assert any(m.value.startswith("**half CFG**: CFG at a fraction") for m in at.markdown)
    os.environ.pop("TOY_PLUGINS", None)
