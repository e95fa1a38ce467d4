"""Why S² helps or hurts: the ideal weak model, the decomposition of the S² signal, the regime effect."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy import mechanism as MX
from toy.diffusion import SamplerConfig, edm_sigmas, sample
from toy.guidance import GuidanceConfig
from toy.presets import get_preset
from toy.nets import ExactDenoiser


def test_blurred_zero_is_the_mixture_and_blur_is_the_closed_form():
    mix = get_preset("gmm2d")
    same = mix.blurred(0.0)
    for a, b in zip(mix.classes, same.classes):
        np.testing.assert_array_equal(a.covs, b.covs)
        np.testing.assert_array_equal(a.means, b.means)
        np.testing.assert_array_equal(a.weights, b.weights)
    x = np.random.default_rng(0).normal(scale=4, size=(64, 2)).astype(np.float32)
    labels = np.arange(64) % 3                                       # both classes and ∅
    np.testing.assert_array_equal(same.denoise(x, 0.7, labels), mix.denoise(x, 0.7, labels))
    # denoise(…, blur=δ) is computed from the original mixture at a larger σ; it must equal the
    # denoiser of the widened mixture, built independently
    for delta, sigma in [(0.5, 0.1), (1.0, 0.7), (2.0, 3.0)]:
        np.testing.assert_allclose(mix.denoise(x, sigma, labels, delta), mix.blurred(delta).denoise(x, sigma, labels),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="blur"):
        mix.blurred(-1.0)


def test_s2_exact_with_omega_zero_is_cfg_exact_and_omega_moves_it():
    mix = get_preset("gmm1d")
    exact = ExactDenoiser(mix, ideal_blur=1.0)
    draw = lambda g: np.asarray(sample(exact, g, SamplerConfig(steps=12), jax.random.key(0), 300, 0).x)
    cfg = draw(GuidanceConfig(method="cfg"))
    np.testing.assert_allclose(draw(GuidanceConfig(method="s2", s2_scale=0.0)), cfg, atol=1e-5)
    assert not np.allclose(draw(GuidanceConfig(method="s2", s2_scale=0.5)), cfg, atol=1e-3)
    # Autoguidance on the exact denoiser guides with the ideal weak model (the truth blurred by δ)
    ag = np.asarray(sample(exact, GuidanceConfig(method="autoguidance"), SamplerConfig(steps=12), jax.random.key(0),
                           300, 0, weak=ExactDenoiser(mix, blur=1.0)).x)
    np.testing.assert_allclose(draw(GuidanceConfig(method="autoguidance")), ag, atol=1e-5)


def test_decompose_recovers_known_coefficients():
    mix = get_preset("gmm2d")
    exact = ExactDenoiser(mix)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(scale=3, size=(500, 2)), jnp.float32)
    dc = np.asarray(exact(x, 1.2, jnp.zeros(500, jnp.int32)), np.float64)
    du = np.asarray(exact(x, 1.2, jnp.full(500, 2, jnp.int32)), np.float64)
    g, h = dc - du, dc - np.asarray(x)
    for a, b in [(0.7, -0.3), (-1.5, 0.4), (0.0, 0.9)]:
        d_hat = dc - a * g + b * (np.asarray(x) - dc)                # D̂ = D_c − a·g + b·(x − D_c)
        r = MX.decompose((dc - d_hat)[None].repeat(3, 0), g, h)
        assert r["alpha"] == pytest.approx(a, abs=1e-9) and r["beta"] == pytest.approx(b, abs=1e-9)
        assert r["r2"] == pytest.approx(1.0, abs=1e-9) and np.isnan(r["cos_error"])
    # an error orthogonal to the plane of g and h is not explained: r² is its share
    noise = rng.normal(size=g.shape)
    s = 0.5 * g + noise
    r = MX.decompose(s[None], g, h, e=s)
    assert 0 < r["r2"] < 1 and r["cos_error"] == pytest.approx(1.0)
    assert MX.decompose(s[None], g, h, e=-s)["cos_error"] == pytest.approx(-1.0)


def test_ideal_weak_model_in_closed_form(tmp_path):
    # One Gaussian class N(0, v): D^δ_c − D_c is exactly β·(D_c − x) with β = δ²/(v + δ² + σ²), and no part along g.
    v, delta = 1.0, 0.8
    spec = {"classes": [{"weights": [1], "means": [0.0], "covs": [v]}, {"weights": [1], "means": [3.0], "covs": [1.0]}]}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(spec))
    cfg = MX.MechanismConfig(preset=str(path), model="ideal", samples=200, ideal_blur=delta,
                             sampler=SamplerConfig(steps=10))
    res = MX.analyze(cfg, progress=False)
    sig = np.asarray(res["sigmas"])
    np.testing.assert_allclose(sig, edm_sigmas(10)[:-1], rtol=1e-6)
    ok = sig > 0.01            # below, D_c − x ~ σ²·x is at float32's rounding level
    np.testing.assert_allclose(np.asarray(res["beta"])[ok], (delta**2 / (v + delta**2 + sig**2))[ok], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res["alpha"])[ok], 0.0, atol=2e-3)
    assert min(np.asarray(res["r2"])[ok]) > 0.999 and all(np.isnan(res["cos_error"]))


def test_interval_for_sigma_selects_exactly_the_steps_in_the_window():
    scfg = SamplerConfig(steps=32)
    sig = edm_sigmas(32)[:-1]
    pos = np.arange(32, dtype=np.float32) / np.float32(31)
    for lo, hi in [(0.3, 1.0), (1.0, 80.0), (0.002, 0.3), (5.0, 6.5)]:
        a, b = MX.interval_for_sigma(scfg, lo, hi)
        active = (pos >= np.float32(a)) & (pos <= np.float32(b))
        np.testing.assert_array_equal(active, (sig >= lo) & (sig <= hi))
    with pytest.raises(ValueError, match="no step"):
        MX.interval_for_sigma(scfg, 5.1, 5.2)
    # wide data raise σ_max: the window is read on the schedule the sampler then runs
    wide = scfg.sigmas(100.0)[:-1]
    assert wide[0] > 80
    a, b = MX.interval_for_sigma(scfg, 50.0, 1000.0, sigma_data=100.0)
    active = (pos >= np.float32(a)) & (pos <= np.float32(b))
    np.testing.assert_array_equal(active, (wide >= 50.0) & (wide <= 1000.0))
    assert active.sum() > (sig >= 50.0).sum()


def test_regime_effect_is_zero_where_s2_is_cfg():
    exact = ExactDenoiser(get_preset("gmm1d"))
    r = MX.regime_effect(exact, "gmm1d", GuidanceConfig(method="s2", s2_scale=0.0), SamplerConfig(steps=8), (0, 1), 200)
    for k in MX.EFFECT_METRICS:
        assert abs(r["effect"][k]["mean"]) < 1e-4 and r["cfg"][k]["mean"] == pytest.approx(r["s2"][k]["mean"], abs=1e-4)
    moved = MX.regime_effect(exact, "gmm1d", GuidanceConfig(method="s2", s2_scale=1.0), SamplerConfig(steps=8), (0, 1), 200)
    assert moved["effect"]["mode_shift"]["mean"] < -0.05           # the ideal weak model pulls CFG's modes back in


def test_cos_ref_equals_cos_error_when_the_reference_is_the_exact_denoiser(trained):
    models = trained("gmm1d")
    cfg = MX.MechanismConfig(preset="gmm1d", quick=True, samples=100, masks=4, sampler=SamplerConfig(steps=10))
    exact = ExactDenoiser(get_preset("gmm1d"))
    res = MX.analyze(cfg, progress=False, models=models, reference=exact)
    np.testing.assert_allclose(res["cos_ref"], res["cos_error"], rtol=1e-6, atol=1e-7, equal_nan=True)
    assert np.isfinite(res["cos_error"]).all()
    # a real reference network is a proxy: it tracks the truth's cosine without being it
    ref = MX.analyze(cfg, progress=False, models=models, reference=MX.reference_network("gmm1d", progress=False))
    assert not np.allclose(ref["cos_ref"], ref["cos_error"])
    assert np.corrcoef(ref["cos_ref"], ref["cos_error"])[0, 1] > 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Synthetic:
    """A network whose every sub-network is D̂ = D_c − a·g + b·(x − D_c), built from a real network's passes."""

    net: object
    a: float = dataclasses.field(metadata=dict(static=True))
    b: float = dataclasses.field(metadata=dict(static=True))

    @property
    def num_blocks(self):
        return self.net.num_blocks

    @property
    def null_label(self):
        return self.net.null_label

    def __call__(self, x, sigma, labels, mask=None):
        return self.net(x, sigma, labels, mask)

    def guided_passes(self, x, sigma, null, label, masks, *, shared_prefix=True, active=None):
        du, dc, _ = self.net.guided_passes(x, sigma, null, label, masks, shared_prefix=shared_prefix)
        sub = dc - self.a * (dc - du) + self.b * (x - dc)
        return du, dc, jnp.broadcast_to(sub, (masks.shape[0],) + sub.shape)


def test_dit_decomposition_recovers_known_coefficients(trained):
    dit = trained("images")["main"]                              # the quick DiT on 8×8 digits: 64-dim states
    g = GuidanceConfig(method="cfg")
    run = sample(dit, g, SamplerConfig(steps=8), jax.random.key(0), 60, 1, return_trajectory=True)
    for a, b in [(0.7, -0.3), (-0.2, 0.5)]:
        res = MX.decompose_states(Synthetic(dit, a, b), {"cos_ref": dit}, np.asarray(run.trajectory), run.sigmas, 1, g,
                                  masks=3, key=jax.random.key(1))
        assert len(res["alpha"]) == 8
        np.testing.assert_allclose(res["alpha"], a, atol=2e-3)
        np.testing.assert_allclose(res["beta"], b, atol=2e-3)
        assert min(res["r2"]) > 0.999
    # the real sub-networks: finite series, and the medians the images command reports
    from toy.images.data import load_digits
    from toy.images.mechanism import DiTMechanismConfig, analyze
    from toy.images.pipeline import quick_config
    out = analyze(dit, trained("images")["early"], quick_config(sampler_steps=6), load_digits(),
                  DiTMechanismConfig(samples=20, masks=2), n=20)
    for k in ("alpha", "beta", "r2", "ratio", "cos_ref"):
        assert len(out[k]) == 6 and np.isfinite(out[k]).all() and np.isfinite(out["interval_medians"][k])
