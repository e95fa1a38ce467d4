"""Time the CIFAR-10 image experiment at GPU size: training steps/s and sampling images/s per method.

    python -m bench.images_gpu [--data PATH] [--size S/2] [--steps 600] [--batch 256] [--json OUT]

With no --data it writes a synthetic archive in the exact CIFAR-10 python format (random pixels,
10,000 images per batch) so the whole code path (safe reader, class selection, training, sampling)
runs without a download; speed does not depend on the pixel values. README.md turns these numbers
into the expected time of a full run.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import platform
import tarfile
import time
from pathlib import Path

import jax
import numpy as np


def synthetic_archive(path: Path, per_batch: int = 10_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            d = {b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
            payload = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def main(argv=None) -> int:
    from toy.guidance import label
    from toy.images.data import load_dataset
    from toy.images.pipeline import TABLE_METHODS, ImageConfig, generate, model_configs
    from toy.train import train

    p = argparse.ArgumentParser(prog="python -m bench.images_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a CIFAR-10 archive (default: a synthetic one in /tmp)")
    p.add_argument("--size", default="S/2")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n", type=int, default=500, help="images per sampling run")
    p.add_argument("--json", default="bench/images_gpu.json")
    a = p.parse_args(argv)
    data_path = Path(a.data) if a.data else synthetic_archive(Path("/tmp/cifar-10-synthetic.tar.gz"))
    t = time.perf_counter()
    data = load_dataset(str(data_path))
    res = {"device": str(jax.devices()[0]), "jax": jax.__version__, "machine": platform.node(),
           "data": "synthetic CIFAR-10 archive" if not a.data else str(data_path), "images": len(data.images),
           "load_s": time.perf_counter() - t, "size": a.size, "batch": a.batch}
    icfg = ImageConfig(data=str(data_path), size=a.size, train_steps=a.steps, batch=a.batch)
    tcfg, mcfg = model_configs(icfg, data)["main"]
    from dataclasses import replace
    half = replace(tcfg, steps=a.steps // 2 // tcfg.chunk * tcfg.chunk, snapshot=0)
    t = time.perf_counter()
    train(half, mixture=data, folder="/tmp/bench-images", tag="warm", progress=False, model_cfg=mcfg)
    first = time.perf_counter() - t                          # compile + half the steps
    t = time.perf_counter()
    out = train(replace(tcfg, snapshot=0), mixture=data, folder="/tmp/bench-images", tag="main", progress=False,
                model_cfg=mcfg)
    full = time.perf_counter() - t                           # compile + all the steps
    steps_per_s = (tcfg.steps - half.steps) / max(full - first, 1e-9)
    res.update(train_steps=tcfg.steps, train_s=full, train_steps_per_s=steps_per_s,
               train_images_per_s=steps_per_s * a.batch, final_loss=float(out.losses[-50:].mean()))
    print(f"training: {steps_per_s:.1f} steps/s ({steps_per_s * a.batch:,.0f} images/s)", flush=True)
    models = {"main": out.model, "small": out.model}
    res["sampling"] = {}
    for m in TABLE_METHODS:
        icfg_m = replace(icfg, sampler_steps=32)
        generate(models, m, a.n, 0, icfg_m, 0)                 # compile
        t = time.perf_counter()
        generate(models, m, a.n, 0, icfg_m, 1)
        s = time.perf_counter() - t
        res["sampling"][m] = {"seconds": s, "images_per_s": a.n / s}
        print(f"{label(m):<18} {a.n / s:8.1f} images/s (32 Heun steps)", flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
