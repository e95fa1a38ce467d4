"""Rescaled classifier-free guidance as a plugin: a guidance method declared from outside the package.

Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed" (Sec. 3.4): CFG at a
large λ inflates the prediction's spread, so they rescale the CFG prediction to the standard deviation
of the conditional one and blend with weight φ:

    D_cfg = D_∅ + λ(D_c − D_∅),   D_rescaled = D_cfg · std(D_c) / std(D_cfg)   (on an image),
    D̃ = φ·D_rescaled + (1 − φ)·D_cfg          (φ = 0: CFG; the paper uses φ = 0.7)

On an image the std runs over a sample's pixels, whose mean is near 0. A toy sample has one or two
coordinates, whose std says nothing (a 1D sample's is 0), so here the spread is the root mean square
of the sample's coordinates (the std without centring): the guided prediction is scaled back to the
conditional prediction's magnitude.

    python -m toy compare --plugin examples/cfg_rescale.py --methods cfg,cfg-rescale --set rescale_phi=0.7
    TOY_PLUGINS=examples/cfg_rescale.py streamlit run app.py
"""

import jax.numpy as jnp

from toy.guidance import Setting, register


@register("cfg-rescale", label="rescaled CFG", needs=("uncond", "cond"), reads=("scale", "rescale_phi"),
          settings=[Setting("rescale_phi", default=0.7, low=0.0, high=1.0, symbol="φ", label="rescale weight",
                            help="φ = 0: CFG; 1: fully rescaled to the conditional prediction's magnitude", runtime=True)],
          formula="φ·D_cfg·rms(D_c)/rms(D_cfg) + (1 − φ)·D_cfg", source="Lin et al. 2024",
          explain=r"Rescaled CFG (Lin et al. 2024): the CFG prediction rescaled to the per-sample magnitude (root "
                  r"mean square) of $D_c$ and blended with weight $\varphi$ (`rescale_phi`).")
def cfg_rescale(d_uncond, d_cond, *, scale, rescale_phi):
    d_cfg = d_uncond + scale * (d_cond - d_uncond)                                   # [n, d]
    rms_cond = jnp.sqrt(jnp.mean(d_cond**2, axis=-1, keepdims=True))                # [n, 1]
    rms_cfg = jnp.sqrt(jnp.mean(d_cfg**2, axis=-1, keepdims=True))                  # [n, 1]
    ratio = jnp.where(rms_cfg > 0, rms_cond / jnp.where(rms_cfg > 0, rms_cfg, 1.0), 1.0)   # [n, 1]
    return rescale_phi * (d_cfg * ratio) + (1 - rescale_phi) * d_cfg
