"""Samplers on the exact denoiser: they must reproduce the target, and CFG must distort it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from toy.diffusion import SamplerConfig, draw_mask_scores, draw_size, edm_sigmas, initial_noise, sample
from toy.errors import NonFiniteError, ToyError
from toy.guidance import GuidanceConfig, mask_scores
from toy.presets import get_preset
from toy.nets import ExactDenoiser, LearnedDenoiser, MLPConfig, init_model

N = 4000


@pytest.fixture(scope="module")
def exact1d():
    mix = get_preset("gmm1d")
    return mix, ExactDenoiser(mix), np.asarray(mix.cond(0).sample(jax.random.key(99), 40_000))[:, 0]


@pytest.mark.parametrize("n,steps,num", [(1, 1, 1), (7, 5, 3), (300, 16, 4), (1000, 33, 9)])
def test_random_draws_are_the_first_rows_of_a_larger_draw(n, steps, num):
    # the draws are made at a power-of-two size and cut; the numbers must be those of a draw of exactly
    # the asked size (computed here directly, one step key at a time)
    key = jax.random.key(11)
    assert draw_size(n, 1) >= n and draw_size(n, 1) < 2 * n + 1
    np.testing.assert_array_equal(initial_noise(key, n, 2), np.asarray(jax.random.normal(key, (n, 2))))
    direct = np.stack([np.asarray(mask_scores(jax.random.fold_in(key, i), num, 8)) for i in range(steps)])
    np.testing.assert_array_equal(draw_mask_scores(key, num, 8, steps), direct)
    assert draw_mask_scores(key, 0, 8, steps).shape == (steps, 0, 8)
    np.testing.assert_array_equal(draw_mask_scores(key, num, 8), np.asarray(mask_scores(key, num, 8)))   # one draw


def test_schedule():
    s = edm_sigmas(10, 0.002, 80.0, 7.0)
    assert s.shape == (11,) and s[0] == pytest.approx(80) and s[9] == pytest.approx(0.002) and s[10] == 0
    assert np.all(np.diff(s) < 0)
    # ρ-schedule by its definition: σ_i^(1/ρ) is linear in i
    np.testing.assert_allclose(np.diff(s[:10] ** (1 / 7)), np.diff(s[:10] ** (1 / 7))[0], rtol=1e-9)


@pytest.mark.parametrize("scfg", [SamplerConfig(steps=32), SamplerConfig(steps=128, solver="euler"),
                                  SamplerConfig(steps=64, churn=20.0)], ids=["heun", "euler", "stochastic"])
def test_exact_sampler_reproduces_target(exact1d, scfg):
    mix, D, ref = exact1d
    x = np.asarray(sample(D, GuidanceConfig(method="none"), scfg, jax.random.key(0), N, 0).x)[:, 0]
    # the W1 of an exact sample of the same size, averaged over draws (one draw's floor is itself noisy)
    noise_floor = np.mean([wasserstein_distance(np.asarray(mix.cond(0).sample(jax.random.key(k), N))[:, 0], ref)
                           for k in (7, 8, 9, 10)])
    assert wasserstein_distance(x, ref) < 2.5 * noise_floor + 0.05
    assert abs(np.mean(np.abs(x)) - np.mean(np.abs(ref))) < 0.1


def test_exact_2d_and_tree_samplers_reproduce_targets():
    for name in ["gmm2d", "tree2d"]:
        mix = get_preset(name)
        x = np.asarray(sample(ExactDenoiser(mix), GuidanceConfig(method="none"), SamplerConfig(steps=64),
                              jax.random.key(1), N, 1).x)
        ref = np.asarray(mix.cond(1).sample(jax.random.key(2), N))
        np.testing.assert_allclose(x.mean(0), ref.mean(0), atol=0.25)
        np.testing.assert_allclose(np.cov(x.T), np.cov(ref.T), rtol=0.1, atol=0.3)
        # every sample lies where the class has mass: mean true log-density matches exact samples'
        lp, lp_ref = float(mix.cond(1).logp(x).mean()), float(mix.cond(1).logp(ref).mean())
        assert abs(lp - lp_ref) < 0.15


def test_lambda_one_is_conditional_sampling_and_cfg_shifts_modes(exact1d):
    mix, D, ref = exact1d
    key, scfg = jax.random.key(3), SamplerConfig()
    plain = sample(D, GuidanceConfig(method="none"), scfg, key, N, 0).x
    cfg1 = sample(D, GuidanceConfig(method="cfg", scale=1.0), scfg, key, N, 0).x
    np.testing.assert_allclose(cfg1, plain, atol=1e-3)
    cfg3 = np.asarray(sample(D, GuidanceConfig(method="cfg", scale=3.0), scfg, key, N, 0).x)[:, 0]
    # CFG with the exact denoisers pushes both modes away from the other class at 0 (paper Fig. 3)
    assert np.mean(np.abs(cfg3)) > np.mean(np.abs(ref)) + 0.5


def test_trajectories_and_determinism(exact1d):
    _, D, _ = exact1d
    scfg = SamplerConfig(steps=16)
    r = sample(D, GuidanceConfig(method="cfg"), scfg, jax.random.key(4), 500, 0, return_trajectory=True)
    assert r.trajectory.shape == (17, 500, 1) and r.denoised.shape == (16, 500, 1)
    np.testing.assert_array_equal(r.trajectory[-1], r.x)
    assert 60 < float(jnp.std(r.trajectory[0])) < 100                          # starts at σ_max = 80
    again = sample(D, GuidanceConfig(method="cfg"), scfg, jax.random.key(4), 500, 0)
    np.testing.assert_array_equal(again.x, r.x)
    other = sample(D, GuidanceConfig(method="cfg"), scfg, jax.random.key(5), 500, 0)
    assert not np.allclose(other.x, r.x)


def test_non_finite_state_names_step_and_method(exact1d):
    _, D, _ = exact1d
    with pytest.raises(NonFiniteError, match=r"'cfg'.*step \d+"):
        sample(D, GuidanceConfig(method="cfg", scale=1e30), SamplerConfig(steps=16), jax.random.key(0), 100, 0)


def test_sampler_validation(exact1d):
    _, D, _ = exact1d
    with pytest.raises(ToyError, match="steps"):
        sample(D, GuidanceConfig(), SamplerConfig(steps=0), jax.random.key(0), 10, 0)
    with pytest.raises(ToyError, match="solver"):
        sample(D, GuidanceConfig(), SamplerConfig(solver="rk4"), jax.random.key(0), 10, 0)
    with pytest.raises(ToyError, match="exact"):
        sample(D, GuidanceConfig(method="s2-naive"), SamplerConfig(), jax.random.key(0), 10, 0)
    net = LearnedDenoiser.from_model(init_model(MLPConfig(dim=1, width=8, num_blocks=2)))
    with pytest.raises(ToyError, match="weak model"):
        sample(net, GuidanceConfig(method="autoguidance"), SamplerConfig(), jax.random.key(0), 10, 0)


@pytest.mark.parametrize("method,kw", [("apg", {}), ("guidance-interval", {}), ("cfg-zero*", {"zero_init_steps": 0})])
def test_baselines_at_lambda_one_are_conditional_sampling(exact1d, method, kw):
    _, D, _ = exact1d
    key, scfg = jax.random.key(8), SamplerConfig(steps=16)
    plain = sample(D, GuidanceConfig(method="none"), scfg, key, 500, 0).x
    np.testing.assert_allclose(sample(D, GuidanceConfig(method=method, scale=1.0, **kw), scfg, key, 500, 0).x,
                               plain, atol=2e-3)


def test_cfgpp_at_zero_samples_the_unconditional_density(exact1d):
    mix, D, _ = exact1d
    x = np.asarray(sample(D, GuidanceConfig(method="cfg++", cfgpp_scale=0.0), SamplerConfig(steps=128),
                          jax.random.key(9), N, 0).x)[:, 0]
    ref = np.asarray(mix.uncond().sample(jax.random.key(10), 40_000))[:, 0]
    noise_floor = wasserstein_distance(np.asarray(mix.uncond().sample(jax.random.key(11), N))[:, 0], ref)
    assert wasserstein_distance(x, ref) < 2.5 * noise_floor + 0.08


def test_guidance_bias_of_cfg_appears_in_every_baseline_but_apg_in_1d(exact1d):
    # In 1D every vector is parallel to D_c, so APG with η = 0 removes all guidance: it is D_c.
    _, D, _ = exact1d
    key = jax.random.key(12)
    plain = sample(D, GuidanceConfig(method="none"), SamplerConfig(), key, 500, 0).x
    np.testing.assert_allclose(sample(D, GuidanceConfig(method="apg", scale=3.0), SamplerConfig(), key, 500, 0).x,
                               plain, atol=1e-4)


def test_runtime_settings_do_not_recompile():
    from toy.diffusion import compiled_samplers
    from toy.nets import LearnedDenoiser, MLPConfig, init_model

    model = init_model(MLPConfig(dim=1), 0)
    model.out.kernel[...] = jax.random.normal(jax.random.key(1), model.out.kernel[...].shape) * 0.3
    D = LearnedDenoiser.from_model(model)
    scfg, key = SamplerConfig(steps=4), jax.random.key(0)
    sample(D, GuidanceConfig(method="s2"), scfg, key, 64, 0)
    sample(D, GuidanceConfig(method="fixed-block"), scfg, key, 64, 0)
    size = compiled_samplers()
    for g in [GuidanceConfig(method="s2", scale=5.0, s2_scale=1.0, interval=(0.0, 1.0), num_drop=3),
              GuidanceConfig(method="s2", drop_ratio=0.6), GuidanceConfig(method="fixed-block", fixed_blocks=(2, 5))]:
        sample(D, g, scfg, key, 64, 0)
    assert compiled_samplers() == size
    # nor do another step count of the same bucket (≤ 32) and another σ schedule; the run is still that many steps
    r = sample(D, GuidanceConfig(method="s2"), SamplerConfig(steps=7, sigma_max=40.0, rho=5.0), key, 64, 0,
               return_trajectory=True)
    assert compiled_samplers() == size
    assert r.trajectory.shape == (8, 64, 1) and r.denoised.shape == (7, 64, 1) and len(r.sigmas) == 8
    np.testing.assert_array_equal(r.trajectory[-1], r.x)
    np.testing.assert_allclose(r.trajectory[0], 40.0 * np.asarray(jax.random.normal(jax.random.split(key, 3)[0], (64, 1))),
                               rtol=1e-6)                                      # starts from σ_max · noise
    # and the runtime number of dropped blocks takes effect exactly: dropping all seven droppable blocks
    # leaves one possible mask, so S² is fixed-block S² with blocks 1-7 dropped at every step, to the bit
    one = sample(D, GuidanceConfig(method="s2", num_drop=1, s2_scale=1.0), scfg, key, 64, 0).x
    every = sample(D, GuidanceConfig(method="s2", num_drop=7, s2_scale=1.0), scfg, key, 64, 0).x
    fixed = sample(D, GuidanceConfig(method="fixed-block", fixed_blocks=tuple(range(1, 8)), s2_scale=1.0), scfg, key,
                   64, 0).x
    np.testing.assert_array_equal(every, fixed)
    assert not np.allclose(one, every)
    assert compiled_samplers() == size


def test_rows_split_over_the_cpu_devices_equal_one_device(monkeypatch):
    """Importing toy splits the CPU into one device per core (two here), and a sampler run of enough
    rows splits them over the devices: every method gives what the one-device program gives, up to
    float rounding (XLA's kernels depend on the row count; bit for bit at some sizes), trajectories
    included, and a non-finite run names the same first bad step."""
    import os

    import toy.diffusion as D
    from toy import runtime
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to split")
    assert jax.local_device_count() == 2 and runtime.data_devices() == jax.local_devices()[:1]
    n = 2 * runtime.MIN_ROWS_PER_DEVICE
    assert runtime.rows_mesh(n) is not None and runtime.rows_mesh(n - 2) is None       # too few rows per device
    assert runtime.rows_mesh(n + 1) is None and runtime.rows_mesh(n, churn=True) is None   # uneven; churn
    model = init_model(MLPConfig(dim=2, width=32, num_blocks=4), 0)
    model.out.kernel[...] = jax.random.normal(jax.random.key(1), model.out.kernel[...].shape) * 0.3
    main = LearnedDenoiser.from_model(model)
    weak = LearnedDenoiser.from_model(init_model(MLPConfig(dim=2, width=16, num_blocks=2), 1))
    scfg, key = SamplerConfig(steps=6), jax.random.key(3)

    def one_device(*a, **k):
        with monkeypatch.context() as m:
            m.setattr(D, "rows_mesh", lambda n, churn=False: None)
            return sample(*a, **k)
    for method in ["cfg", "s2", "s2-naive", "autoguidance", "apg", "cfg++"]:
        g = GuidanceConfig(method=method, scale=2.0, s2_scale=0.5)
        split = sample(main, g, scfg, key, n, 1, weak=weak, return_trajectory=True)
        ref = one_device(main, g, scfg, key, n, 1, weak=weak, return_trajectory=True)
        # a wrong row order or a share sampled twice moves samples by O(1); rounding by < 1e-3
        np.testing.assert_allclose(split.x, ref.x, atol=1e-3, err_msg=method)
        np.testing.assert_allclose(split.trajectory, ref.trajectory, atol=1e-3, err_msg=method)
        np.testing.assert_allclose(split.denoised, ref.denoised, atol=1e-3, err_msg=method)
    exact = ExactDenoiser(get_preset("gmm2d"))
    np.testing.assert_allclose(sample(exact, GuidanceConfig(method="s2"), scfg, key, n, 0).x,
                               one_device(exact, GuidanceConfig(method="s2"), scfg, key, n, 0).x, atol=1e-3)
    huge = GuidanceConfig(method="cfg", scale=1e30)
    with pytest.raises(NonFiniteError) as split_err:
        sample(main, huge, scfg, key, n, 1)
    with pytest.raises(NonFiniteError) as one_err:
        one_device(main, huge, scfg, key, n, 1)
    assert str(split_err.value) == str(one_err.value)


def test_importing_toy_leaves_jax_alone():
    """`import toy` (and every core module) changes nothing in JAX's configuration: a program that
    embeds the simulator keeps its own devices until it calls `toy.runtime.setup()`."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("TOY_CPU_DEVICES", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    code = ("import toy, toy.guidance, toy.diffusion, toy.train, toy.evaluation, jax; print(jax.device_count()); "
            "import toy.runtime; print(toy.runtime.setup())")
    r = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                       text=True, check=True)
    assert r.stdout.split() == ["1", "False"]       # setup after JAX started: it keeps JAX's devices


def test_cpu_split_setting():
    """TOY_CPU_DEVICES=1 keeps one CPU device; a value that is not an integer from 1 to 256 is ignored
    with a warning that names it; a device count the user set (XLA's flag, JAX's setting in the
    environment or through jax.config before importing toy) is left alone."""
    import os
    import subprocess
    import sys
    code = ("import warnings; warnings.simplefilter('always'); import toy.runtime, jax; toy.runtime.setup(); "
            "print('devices', len(jax.devices()))")

    def run(first="", **env):
        base = {k: v for k, v in os.environ.items() if k not in ("TOY_CPU_DEVICES", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        r = subprocess.run([sys.executable, "-c", first + code], env={**base, "JAX_PLATFORMS": "cpu", **env},
                           capture_output=True, text=True, check=True)
        return int(r.stdout.split("devices ")[1]), r.stderr
    assert run(TOY_CPU_DEVICES="1") == (1, "")
    count, err = run(TOY_CPU_DEVICES="two")
    assert count == 1 and "TOY_CPU_DEVICES='two' ignored" in err and "from 1 to 256" in err
    assert run(TOY_CPU_DEVICES="3")[0] == 3
    assert run(XLA_FLAGS="--xla_force_host_platform_device_count=4", TOY_CPU_DEVICES="2")[0] == 4
    assert run(JAX_NUM_CPU_DEVICES="3")[0] == 3
    assert run("import jax; jax.config.update('jax_num_cpu_devices', 4); ")[0] == 4
