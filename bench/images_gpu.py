"""Time the CIFAR-10 image experiment at GPU size: training steps/s and sampling images/s per method;
then the S² mechanism on the trained DiT and a depth sweep at that width (toy/images/mechanism.py).

    python -m bench.images_gpu [--data PATH] [--size S/2] [--steps 600] [--batch 256] [--json OUT]
                               [--depths 4,12,28] [--sweep-steps 600] [--per-class 250] [--no-mechanism]

The mechanism part: α, β, r², |s|/|g| and cos_ref of the main DiT along its CFG sampler, against a
reference DiT of the same size trained 4× as long; and for each depth of --depths a DiT of the main
width trained --sweep-steps steps, with S² − CFG in Fréchet distance (features of a classifier trained
on the same images; seeds 0, 1, 2) and the medians of α, β, cos_ref where S² acts.

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


def mechanism(main_net, data, icfg, a, tcfg, mcfg) -> dict:
    """The DiT mechanism against a reference of the same size trained 4× as long, and the depth sweep."""
    from dataclasses import replace

    from toy.evaluation import summarize
    from toy.images import mechanism as IM
    from toy.images.features import image_metrics, train_classifier
    from toy.images.pipeline import generate_all
    from toy.train import train

    t = time.perf_counter()
    ref = train(replace(tcfg, steps=4 * tcfg.steps, snapshot=0), mixture=data, folder="/tmp/bench-images",
                tag="reference", progress=False, model_cfg=mcfg).model
    cfg = replace(icfg, sampler_steps=32, per_class=a.per_class, seeds=(0, 1, 2))
    mech = IM.analyze(main_net, ref, cfg, data, IM.DiTMechanismConfig(samples=200, masks=8), n=200)
    out = {"mechanism": {"reference": f"DiT-{icfg.size}, {4 * tcfg.steps} steps", **mech}}
    print("mechanism medians where S² acts:", {k: round(v, 3) for k, v in mech["interval_medians"].items()}, flush=True)
    fnet = train_classifier(data.flat(), data.labels, data.num_classes, seed=0)
    keep = np.random.default_rng(0).permutation(len(data.images))[:2000]   # k-NN radii are O(n²) in memory
    real = fnet.features(data.flat()[keep])
    sweep = []
    for d in (int(v) for v in a.depths.split(",")):
        net = train(replace(tcfg, num_blocks=d, steps=a.sweep_steps, snapshot=0), mixture=data, folder="/tmp/bench-images",
                    tag=f"depth-{d}", progress=False, model_cfg=replace(mcfg, depth=d)).model
        models = {"main": net, cfg.weak: None}
        fd = {m: [image_metrics(fnet, real, *generate_all(models, m, cfg, data, s))["fd"] for s in cfg.seeds]
              for m in ("cfg", "s2")}
        m = IM.analyze(net, ref, cfg, data, IM.DiTMechanismConfig(samples=200, masks=8), n=200)
        sweep.append({"depth": d, "blocks_dropped": m["blocks_dropped"], "fd_cfg": summarize(fd["cfg"]),
                      "fd_s2": summarize(fd["s2"]), "effect": summarize(np.subtract(fd["s2"], fd["cfg"])),
                      "interval_medians": m["interval_medians"]})
        print(f"depth {d}: S² − CFG {sweep[-1]['effect']['mean']:+.3f} FD; medians {m['interval_medians']}", flush=True)
    out["depth_sweep"] = {"width": mcfg.width, "train_steps": a.sweep_steps, "per_class": a.per_class,
                          "seeds": list(cfg.seeds), "runs": sweep, "seconds": time.perf_counter() - t}
    return out


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
    p.add_argument("--image-size", type=int, default=32, help="32, or 16/8 for a CPU smoke run")
    p.add_argument("--depths", default="4,12,28", help="the depth sweep's depths")
    p.add_argument("--sweep-steps", type=int, default=600)
    p.add_argument("--per-class", type=int, default=250, help="generations per class for the Fréchet distances")
    p.add_argument("--no-mechanism", action="store_true", help="time training and sampling only")
    a = p.parse_args(argv)
    data_path = Path(a.data) if a.data else synthetic_archive(Path("/tmp/cifar-10-synthetic.tar.gz"))
    t = time.perf_counter()
    data = load_dataset(str(data_path), image_size=a.image_size)
    res = {"device": str(jax.devices()[0]), "jax": jax.__version__, "machine": platform.node(),
           "data": "synthetic CIFAR-10 archive" if not a.data else str(data_path), "images": len(data.images),
           "load_s": time.perf_counter() - t, "size": a.size, "batch": a.batch}
    icfg = ImageConfig(data=str(data_path), size=a.size, train_steps=a.steps, batch=a.batch, image_size=a.image_size)
    tcfg, mcfg = model_configs(icfg, data)["main"]
    from dataclasses import replace
    half = replace(tcfg, steps=a.steps // 2 // tcfg.chunk * tcfg.chunk, snapshot=0)
    t = time.perf_counter()
    train(half, mixture=data, folder="/tmp/bench-images", tag="warm", progress=False, model_cfg=mcfg, fresh=True)
    first = time.perf_counter() - t                          # compile + half the steps
    t = time.perf_counter()
    out = train(replace(tcfg, snapshot=0), mixture=data, folder="/tmp/bench-images", tag="main", progress=False,
                model_cfg=mcfg, fresh=True)
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
    if not a.no_mechanism:
        res.update(mechanism(out.model, data, icfg, a, tcfg, mcfg))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
