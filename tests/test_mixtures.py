"""Closed forms of the Gaussian mixtures against independent float64 computations."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from toy.errors import ToyError
from toy.mixtures import GaussianMixture, component_labels
from toy.presets import from_dict, get_preset, load_json

SIGMAS = [0.002, 0.05, 1.0, 80.0]


def random_mixture(d, k, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, d, d))
    covs = A @ A.transpose(0, 2, 1) * 0.5 + 0.1 * np.eye(d)
    return GaussianMixture(rng.uniform(0.2, 1.0, k), rng.normal(scale=3, size=(k, d)), covs)


def ref_terms(m, x, sigma):
    """float64 per-component log-densities and the inverse covariances at noise level sigma."""
    d = m.dim
    C = m.covs + sigma**2 * np.eye(d)                                             # [K, d, d]
    logj = np.stack([np.log(w) + multivariate_normal(mu, c).logpdf(x).reshape(len(x))
                     for w, mu, c in zip(m.weights, m.means, C)], axis=1)         # [n, K]
    return logj, np.linalg.inv(C)


def ref_logp(m, x, sigma):
    return logsumexp(ref_terms(m, x, sigma)[0], axis=1)


def ref_denoise(m, x, sigma):
    logj, Cinv = ref_terms(m, x, sigma)
    r = np.exp(logj - logsumexp(logj, axis=1, keepdims=True))                    # [n, K]
    # posterior mean of each component: μ_k + Σ_k (Σ_k + σ²I)⁻¹ (x − μ_k)
    post = m.means[None] + np.einsum("kij,kjl,nkl->nki", m.covs, Cinv, x[:, None] - m.means[None])
    return np.einsum("nk,nki->ni", r, post)


def test_float64_reference_reproduces_the_textbook_1d_case():
    # The reference itself: one 1D Gaussian N(m, s²) at noise σ has E[x0|x] = m + s²/(s²+σ²)(x − m).
    m = GaussianMixture([1.0], [[2.0]], [[[4.0]]])
    x = np.array([[0.0], [5.0]])
    np.testing.assert_allclose(ref_denoise(m, x, 1.0)[:, 0], 2 + 4 / 5 * (x[:, 0] - 2))


@pytest.mark.parametrize("d,k", [(1, 3), (2, 4), (3, 2)])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_logp_and_denoise_match_float64(d, k, sigma):
    m = random_mixture(d, k, seed=d * 10 + k)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(scale=4, size=(20, d)),
                        np.full((3, d), 60.0), np.full((2, d), -200.0)])          # far from every mode
    lp = np.asarray(m.logp(jnp.asarray(x, jnp.float32), sigma), np.float64)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp, ref_logp(m, x, sigma), rtol=1e-4, atol=1e-4)
    den = np.asarray(m.denoise(jnp.asarray(x, jnp.float32), sigma), np.float64)
    assert np.all(np.isfinite(den))
    ref = ref_denoise(m, x, sigma)
    np.testing.assert_allclose(den, ref, rtol=1e-4, atol=1e-4 * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("sigma", [0.05, 1.0, 10.0])
def test_score_is_gradient_of_logp_and_tweedie(sigma):
    m = random_mixture(2, 3, seed=7)
    x = jnp.asarray(np.random.default_rng(2).normal(scale=3, size=(16, 2)), jnp.float32)
    grad = jax.vmap(jax.grad(lambda xi: m.logp(xi[None], sigma)[0]))(x)
    np.testing.assert_allclose(m.score(x, sigma), grad, rtol=1e-3, atol=1e-4)
    # Tweedie: D(x; σ) = x + σ² ∇ log p_σ(x), checked against the float64 posterior mean.
    np.testing.assert_allclose(np.asarray(x) + sigma**2 * np.asarray(m.score(x, sigma)),
                               ref_denoise(m, np.asarray(x, np.float64), sigma), rtol=1e-3, atol=1e-3)


def test_sigma_per_sample_matches_scalar_calls():
    m = random_mixture(2, 3, seed=3)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(4, 2)), jnp.float32)
    sig = jnp.asarray([0.01, 0.5, 2.0, 40.0])
    batched = m.denoise(x, sig)
    for i in range(4):
        np.testing.assert_allclose(batched[i], m.denoise(x[i:i + 1], float(sig[i]))[0], rtol=1e-5, atol=1e-6)


def test_sample_moments_at_noise_level():
    m = random_mixture(2, 3, seed=5)
    mean, cov = m.moments()
    # the mixture's moments, computed independently
    np.testing.assert_allclose(mean, (m.weights[:, None] * m.means).sum(0))
    for sigma in [0.0, 2.0]:
        x = np.asarray(m.sample(jax.random.key(0), 200_000, sigma), np.float64)
        np.testing.assert_allclose(x.mean(0), mean, atol=0.05)
        np.testing.assert_allclose(np.cov(x.T), cov + sigma**2 * np.eye(2), rtol=0.03, atol=0.05)


def test_conditional_container():
    cm = get_preset("gmm2d")
    x = jnp.asarray(np.random.default_rng(0).normal(scale=5, size=(50, 2)), jnp.float32)
    # p(x) = Σ_c P(c) p(x | c)
    mix = sum(w * np.asarray(cm.cond(c).pdf(x)) for c, w in enumerate(cm.class_weights))
    np.testing.assert_allclose(np.asarray(cm.uncond().pdf(x)), mix, rtol=1e-5)
    # a batch with mixed labels (null included) equals per-class calls
    labels = jnp.asarray(np.arange(50) % 3)
    batched = cm.denoise(x, 0.7, labels)
    for c in range(3):
        np.testing.assert_allclose(batched[labels == c], cm.cond(c).denoise(x[labels == c], 0.7), rtol=1e-5, atol=1e-6)
    xs, labs = cm.sample(jax.random.key(1), 20_000)
    assert not np.any(np.asarray(labs) == cm.null_label)            # the ground truth knows no label dropout
    shares = np.bincount(np.asarray(labs), minlength=len(cm.classes)) / 20_000
    np.testing.assert_allclose(shares, cm.class_weights / cm.class_weights.sum(), atol=0.02)


def test_presets_are_the_papers():
    g1 = get_preset("gmm1d").cond(0)
    np.testing.assert_allclose(sorted(g1.means[:, 0]), [-4, 4])
    g2 = get_preset("gmm2d").uncond()
    assert {tuple(m) for m in g2.means} == {(4, 4), (-4, -4), (-4, 4), (4, -4)}
    tree = get_preset("tree2d")
    eig = np.linalg.eigvalsh(tree.cond(0).covs)
    assert tree.dim == 2 and (eig[:, 1] / eig[:, 0]).min() > 10       # thin, anisotropic branches
    assert get_preset("gmm2d") is get_preset("gmm2d")


def test_component_labels_picks_nearest_mode():
    g = get_preset("gmm1d").cond(0)
    lab = np.asarray(component_labels(g, jnp.asarray([[-5.0], [-0.5], [0.5], [3.0]])))
    assert [g.means[k, 0] for k in lab] == [-4, -4, 4, 4]


@pytest.mark.parametrize("spec,needle", [
    ({"classes": [{"weights": [0.5, -0.5], "means": [0, 1], "covs": [1, 1]}]}, "weights"),
    ({"classes": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 2], [0, 1]]]}]}, "symmetric"),
    ({"classes": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}]}, "positive definite"),
    ({"classes": [{"weights": [1, 1], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]}]}, "class 0"),
    ({"classes": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]},
                  {"weights": [1], "means": [0], "covs": [1]}]}, "dimension"),
    ({"classes": []}, "classes"),
    ({"nothing": 1}, "classes"),
    ({"classes": [{"weights": [1], "means": [0], "covs": [1]}], "class_weights": [0]}, "class_weights"),
])
def test_invalid_mixtures_raise_clear_errors(spec, needle):
    with pytest.raises(ToyError, match=needle):
        from_dict(spec)


def test_json_files(tmp_path):
    good = {"classes": [{"weights": [1, 1], "means": [-2, 2], "covs": [0.5, 0.5]},
                        {"weights": [1], "means": [0], "covs": [1]}], "class_names": ["a", "b"]}
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(good))
    m = get_preset(str(p))
    assert m.num_classes == 2 and m.dim == 1 and m.class_names == ("a", "b")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ToyError, match="not valid JSON"):
        load_json(tmp_path / "bad.json")
    with pytest.raises(ToyError, match="cannot read"):
        load_json(tmp_path / "missing.json")
    with pytest.raises(ToyError, match="unknown preset"):
        get_preset("gmm9d")


def test_host_inputs_give_the_device_inputs_bits_with_one_program_per_call(caplog):
    # NumPy inputs stay on the host until the one jitted closed form: same numbers as device inputs,
    # and a new shape compiles that one program, not one more per conversion or broadcast
    cm = get_preset("gmm2d")
    x = np.random.default_rng(0).normal(scale=3, size=(37, 2))                        # float64, host
    labels = np.arange(37) % 3
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_array_equal(np.asarray(cm.cond(0).logp(x, 0.5)), np.asarray(cm.cond(0).logp(xj, 0.5)))
    np.testing.assert_array_equal(np.asarray(cm.denoise(x, 0.7, labels, 0.3)),
                                  np.asarray(cm.denoise(xj, jnp.float32(0.7), jnp.asarray(labels), 0.3)))
    np.testing.assert_array_equal(np.asarray(cm.score(x, 0.2, labels)), np.asarray(cm.score(xj, 0.2, labels)))
    x2 = np.random.default_rng(1).normal(size=(41, 2))
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        for f in (lambda: cm.cond(1).logp(x2), lambda: cm.cond(1).pdf(x2, 0.3), lambda: cm.denoise(x2, 0.4, 2 * np.ones(41)),
                  lambda: component_labels(cm.cond(1), x2)):
            caplog.clear()
            f()
            compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
            assert len(compiled) == 1, compiled


@pytest.mark.parametrize("preset", ["gmm1d", "gmm2d", "tree2d"])
def test_density_window_holds_the_noised_density(preset):
    from toy.plotting import density_window
    cm = get_preset(preset)
    for c in range(cm.num_classes):
        target = cm.cond(c)
        for sigma in (0.0, 2.0):
            w = density_window(target, sigma)
            x = np.asarray(target.sample(jax.random.key(c), 20000, sigma))                 # [n, d]
            inside = np.all((x >= w.lo) & (x <= w.hi), axis=1)
            assert inside.mean() > 0.9995, (preset, c, sigma, inside.mean())
            if target.dim == 1:                  # the density curve is the whole pdf: it integrates to 1
                assert abs(np.trapezoid(w.pdf, w.x) - 1) < 1e-3
