"""Guidance formulas and their invariants; masks; validation of settings."""

import functools
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy import guidance as G
from toy import settings as S
from toy.diffusion import SamplerConfig, sample
from toy.errors import ToyError
from toy.guidance import GuidanceConfig, guided_prediction
from toy.nets import LearnedDenoiser, MLPConfig, init_model


def preds(seed=0, n=16, d=2):
    k = jax.random.split(jax.random.key(seed), 4)
    return [jax.random.normal(ki, (n, d)) for ki in k]


def test_formula_invariants():
    du, dc, dsub, dw = preds()
    n_du, n_dc, n_ds, n_dw = map(np.asarray, (du, dc, dsub, dw))
    np.testing.assert_allclose(G.cfg(du, dc, 1.0), dc, atol=1e-6)                  # λ = 1: conditional
    np.testing.assert_allclose(G.cfg(du, dc, 0.0), du, atol=1e-6)                  # λ = 0: unconditional
    np.testing.assert_allclose(G.cfg(du, dc, 2.5), n_dc + 1.5 * (n_dc - n_du), atol=1e-5)   # D_c + (λ − 1)(D_c − D_∅)
    np.testing.assert_allclose(G.s2(du, dc, dsub, 3.0, 0.0), G.cfg(du, dc, 3.0))   # ω = 0: CFG
    np.testing.assert_allclose(G.s2(du, dc, dc, 3.0, 0.7), G.cfg(du, dc, 3.0))     # full-network "sub": CFG
    np.testing.assert_allclose(G.s2_naive(du, dc, dsub[None], 3.0, 0.25), G.s2(du, dc, dsub, 3.0, 0.25), atol=1e-6)
    np.testing.assert_allclose(G.autoguidance(dw, dc, 1.0), dc, atol=1e-6)
    np.testing.assert_allclose(G.autoguidance(dw, dc, 2.0), 2 * n_dc - n_dw, atol=1e-5)
    # Eq. 3 in NumPy for N = 2, written as CFG's extrapolation plus the mean correction
    subs = jnp.stack([dsub, dw])
    by_hand = n_dc + 1.0 * (n_dc - n_du) - 0.5 * np.mean([n_ds - n_dc, n_dw - n_dc], axis=0)
    np.testing.assert_allclose(G.s2_naive(du, dc, subs, 2.0, 0.5), by_hand, atol=1e-5)


def test_masks_count_exclusion_and_uniformity():
    # the masks S² draws: uniform scores per mask, the k_drop lowest non-excluded blocks dropped
    K, k_drop = 8, 2
    masks = jax.vmap(lambda sc: G.mask_from_scores(sc, (0,), k_drop))(G.mask_scores(jax.random.key(0), 4000, K))
    masks = np.asarray(masks)
    assert np.all((K - masks.sum(1)) == k_drop)
    assert np.all(masks[:, 0] == 1)
    freq = 1 - masks[:, 1:].mean(0)               # each droppable block: k_drop / 7
    np.testing.assert_allclose(freq, k_drop / 7, atol=0.03)


def test_num_dropped_and_fixed_mask():
    assert G.num_dropped(8, (0,), 0.1, None) == 1
    assert G.num_dropped(8, (0,), 0.5, None) == 4
    assert G.num_dropped(8, (0,), 0.1, 3) == 3
    np.testing.assert_array_equal(G.fixed_mask(4, (1, 3)), [1, 0, 1, 0])
    with pytest.raises(ToyError, match="no droppable block"):
        G.num_dropped(2, (0, 1), 0.1, None)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(scale=float("nan")), "guidance scale"),
    (dict(scale=-1.0), "guidance scale"),
    (dict(s2_scale=-0.5), "S² scale"),
    (dict(s2_scale=float("inf")), "S² scale"),
    (dict(drop_ratio=0.0), "drop ratio"),
    (dict(drop_ratio=1.0), "drop ratio"),
    (dict(drop_ratio=1.5), "drop ratio"),
    (dict(method="magic"), "unknown method"),
    (dict(interval=(0.9, 0.1)), "interval"),
    (dict(interval=(-0.1, 0.5)), "interval start"),
    (dict(num_masks=0), "num_masks"),
])
def test_invalid_settings_name_the_parameter(kwargs, needle):
    with pytest.raises(ToyError, match=needle):
        GuidanceConfig(method=kwargs.pop("method", "s2"), **kwargs).validate(8)


def test_structural_errors():
    with pytest.raises(ToyError, match="no droppable block"):
        GuidanceConfig(method="s2", exclude=(0,)).validate(1)
    for method in ("s2-naive", "fixed-block"):             # no ideal-weak-model form on the exact denoiser
        with pytest.raises(ToyError, match="exact"):
            GuidanceConfig(method=method).validate(0)
    GuidanceConfig(method="s2").validate(0)                 # S² on the exact denoiser: the ideal weak model
    with pytest.raises(ToyError, match="fixed block"):
        GuidanceConfig(method="fixed-block", fixed_blocks=(9,)).validate(8)
    # structural checks apply to the fields a method reads only: fixed-block never reads `exclude`
    GuidanceConfig(method="fixed-block", exclude=tuple(range(8))).validate(8)
    with pytest.raises(ToyError, match="no droppable block"):
        GuidanceConfig(method="s2", exclude=tuple(range(8))).validate(8)


@pytest.fixture(scope="module")
def net():
    model = init_model(MLPConfig(), 0)
    model.out.kernel[...] = jax.random.normal(jax.random.key(1), model.out.kernel[...].shape) * 0.3
    return LearnedDenoiser.from_model(model)


@functools.partial(jax.jit, static_argnums=0)
def _guided(gcfg, net, x, key, position, dyn):
    return guided_prediction(gcfg, net, net, x, jnp.float32(1.3), jnp.zeros(6, jnp.int32), key, position, dyn)


def call(net, method, dyn, key=0, position=0.5, **kw):
    x = jax.random.normal(jax.random.key(5), (6, 2)) * 3
    lam, omega, lo, hi = dyn
    gcfg = GuidanceConfig(method=method, scale=lam, s2_scale=omega, interval=(lo, hi), **kw).validate(net.num_blocks)
    # as the sampler does: the static part selects the program, the dynamic part feeds it
    return x, _guided(gcfg.static(), net, x, jax.random.key(key), jnp.float32(position), gcfg.runtime(net.num_blocks))


def test_guided_prediction_invariants(net):
    x, d_none = call(net, "none", [3, 0.25, 0.1, 0.9])
    _, d_cfg1 = call(net, "cfg", [1, 0.25, 0.1, 0.9])
    np.testing.assert_allclose(d_cfg1, d_none, atol=1e-5)                        # λ = 1 is conditional
    _, d_cfg = call(net, "cfg", [3, 0.25, 0.1, 0.9])
    _, d_s2_0 = call(net, "s2", [3, 0.0, 0.1, 0.9])
    np.testing.assert_allclose(d_s2_0, d_cfg, atol=1e-5)                         # ω = 0 is CFG
    _, d_s2 = call(net, "s2", [3, 0.25, 0.1, 0.9])
    assert not np.allclose(d_s2, d_cfg, atol=1e-4)
    _, d_out = call(net, "s2", [3, 0.25, 0.6, 0.9], position=0.5)
    np.testing.assert_allclose(d_out, d_cfg, atol=1e-5)                          # outside the interval: CFG
    _, d_naive1 = call(net, "s2-naive", [3, 0.25, 0.1, 0.9], num_masks=1)
    np.testing.assert_allclose(d_naive1, d_s2, atol=1e-5)                        # N = 1, same key: same mask


def test_s2_and_fixed_block_by_hand(net):
    x, d_fixed = call(net, "fixed-block", [2, 0.5, 0.0, 1.0], fixed_blocks=(3,))
    s, c, null = jnp.float32(1.3), jnp.zeros(6, jnp.int32), jnp.full(6, 2)
    du, dc = net(x, s, null), net(x, s, c)
    dsub = net(x, s, c, jnp.ones(8).at[3].set(0))
    np.testing.assert_allclose(d_fixed, du + 2 * (dc - du) - 0.5 * (dsub - dc), rtol=1e-5, atol=1e-5)
    # s2 uses exactly one mask per step: its result is one of the single-block sub-networks
    _, d_s2 = call(net, "s2", [2, 0.5, 0.0, 1.0], key=11)
    candidates = [du + 2 * (dc - du) - 0.5 * (net(x, s, c, jnp.ones(8).at[b].set(0)) - dc) for b in range(1, 8)]
    assert sum(np.allclose(d_s2, cand, atol=1e-5) for cand in candidates) == 1
    # and fresh keys draw different masks
    seen = set()
    for k in range(12):
        d = call(net, "s2", [2, .5, 0, 1], key=k)[1]
        seen.add(int(np.argmin([np.abs(d - cd).max() for cd in candidates])))
    assert len(seen) > 3


# -- the paper's baselines ----------------------------------------------------------------------

def test_baseline_formulas_by_hand():
    du, dc, _, x = preds(3)
    # CFG-Zero*: by hand in NumPy on ε = (x − D)/σ
    sigma = 2.0
    eu, ec = (np.asarray(x) - np.asarray(du)) / sigma, (np.asarray(x) - np.asarray(dc)) / sigma
    s = (ec * eu).sum(1, keepdims=True) / (eu**2).sum(1, keepdims=True)
    np.testing.assert_allclose(G.cfg_zero_star(x, sigma, du, dc, scale=3.0), np.asarray(x) - sigma * (s * eu + 3 * (ec - s * eu)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(G.cfg_zero_star(x, sigma, du, dc, scale=1.0), dc, atol=1e-5)     # λ = 1: conditional
    np.testing.assert_array_equal(G.cfg_zero_star(x, sigma, du, dc, 0, scale=3.0, zero_init_steps=1), x)   # zero-init
    # APG: no momentum, no threshold, η = 1 recombines the two parts into plain CFG
    zero = jnp.zeros_like(du)
    apg = functools.partial(G.apg, scale=3.0)
    d, run = apg(du, dc, zero, apg_eta=1.0, apg_momentum=0.0, apg_norm_threshold=1e9)
    np.testing.assert_allclose(d, G.cfg(du, dc, 3.0), atol=1e-5)
    np.testing.assert_allclose(run, dc - du, atol=1e-6)
    # η = 0 removes the part parallel to D_c; the norm threshold bounds the update
    d, _ = apg(du, dc, zero, apg_eta=0.0, apg_momentum=0.0, apg_norm_threshold=0.1)
    upd = np.asarray(d - dc)
    np.testing.assert_allclose((upd * np.asarray(dc)).sum(1), 0.0, atol=1e-5)
    assert np.all(np.linalg.norm(upd, axis=1) <= 2 * 0.1 + 1e-5)
    # momentum: the running average is Δ + β·previous
    _, run2 = apg(du, dc, run, apg_eta=0.0, apg_momentum=-0.5, apg_norm_threshold=1e9)
    np.testing.assert_allclose(run2, (dc - du) - 0.5 * run, atol=1e-6)
    # guidance interval: CFG inside (lo, hi], conditional outside
    gi = functools.partial(G.guidance_interval, scale=3.0, gi_sigma=(0.28, 5.42))
    np.testing.assert_allclose(gi(du, dc, 1.0), G.cfg(du, dc, 3.0))
    np.testing.assert_allclose(gi(du, dc, 10.0), dc)
    np.testing.assert_allclose(gi(du, dc, 0.1), dc)


def test_cfgpp_sampler_is_a_ddim_step_renoised_with_the_unconditional_noise():
    """CFG++ through the sampler against an independent NumPy loop on the exact denoiser: one
    evaluation per step (first order, whatever the solver), x_next = D̃ + σ_next·(x − D_∅)/σ."""
    from toy.nets import ExactDenoiser
    from toy.presets import get_preset
    mix = get_preset("gmm1d")
    exact, scfg = ExactDenoiser(mix), SamplerConfig(steps=6)
    res = sample(exact, GuidanceConfig(method="cfg++", cfgpp_scale=0.4), scfg, jax.random.key(2), 64, 0,
                 return_trajectory=True)
    sig = res.sigmas
    x = np.asarray(res.trajectory[0], np.float64)
    for i in range(len(sig) - 1):
        xf = np.asarray(x, np.float32)
        du = np.asarray(mix.denoise(xf, sig[i], np.full(64, mix.null_label)), np.float64)
        dc = np.asarray(mix.denoise(xf, sig[i], np.zeros(64, np.int32)), np.float64)
        x = du + 0.4 * (dc - du) + sig[i + 1] * (x - du) / sig[i]
    np.testing.assert_allclose(res.x, x, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(cfgpp_scale=1.5), "CFG\\+\\+ scale"),
    (dict(apg_momentum=-1.0), "APG momentum"),
    (dict(apg_norm_threshold=0.0), "APG norm threshold"),
    (dict(gi_sigma=(5.0, 1.0)), "guidance-interval"),
    (dict(zero_init_steps=-1), "zero_init_steps"),
])
def test_baseline_settings_are_validated(kwargs, needle):
    with pytest.raises(ToyError, match=needle):
        GuidanceConfig(method="cfg", **kwargs).validate(8)


# Values different from every default, each valid for a 4-block network.
_ALT = dict(scale=5.0, s2_scale=1.0, drop_ratio=0.5, num_drop=2, exclude=(0, 1), interval=(0.0, 0.5), num_masks=3,
            fixed_blocks=(2,), cfgpp_scale=0.3, zero_init_steps=2, apg_eta=0.5, apg_momentum=0.3,
            apg_norm_threshold=1.0, gi_sigma=(0.5, 2.0))


@pytest.fixture(scope="module")
def small_nets():
    def make(seed):
        model = init_model(MLPConfig(width=16, num_blocks=4), seed)
        model.out.kernel[...] = jax.random.normal(jax.random.key(seed + 1), model.out.kernel[...].shape) * 0.3
        return LearnedDenoiser.from_model(model)
    return make(0), make(5)


@pytest.mark.parametrize("method", G.METHODS)
def test_fields_a_method_does_not_read_do_not_change_its_samples(small_nets, method):
    # canonical() is a cache key (the app reuses a method's samples when only other fields move):
    # changing every field outside REGISTRY[method].params must leave the samples bit-identical.
    main, weak = small_nets
    assert set(_ALT) | {"method", "shared_prefix", "extra"} == set(GuidanceConfig.__dataclass_fields__)
    assert set(_ALT) == set(S.GUIDANCE)                 # every field is a declared setting
    base = GuidanceConfig(method=method)
    other = GuidanceConfig(method=method, **{f: v for f, v in _ALT.items() if f not in G.REGISTRY[method].params})
    assert other != base and other.canonical() == base.canonical()

    def draw(g):
        return np.asarray(sample(main, g, SamplerConfig(steps=4), jax.random.key(0), 32, 1, weak=weak).x)
    np.testing.assert_array_equal(draw(other), draw(base))


def test_fields_a_method_reads_change_its_samples(small_nets):
    # The other direction for the runtime fields: the registry does not list a field a method ignores.
    main, weak = small_nets
    for method in ("cfg", "s2", "fixed-block"):
        base = GuidanceConfig(method=method)
        x0 = np.asarray(sample(main, base, SamplerConfig(steps=4), jax.random.key(0), 32, 1, weak=weak).x)
        for f in G.REGISTRY[method].params:
            if f in ("scale", "s2_scale", "interval", "num_drop", "fixed_blocks"):
                g = replace(base, **{f: _ALT[f]})
                assert g.canonical() != base.canonical()
                x1 = np.asarray(sample(main, g, SamplerConfig(steps=4), jax.random.key(0), 32, 1, weak=weak).x)
                assert not np.allclose(x1, x0), (method, f)
