"""Hostile input, family by family: every probe ends in one clear `error:` line and exit code 2,
before any training or sampling, or in a correct result. Nothing hangs.

The families: output paths, encodings, nesting, checkpoint headers, image archives, pickles,
scales, duplicates, seeds, image-command arguments, and the app's custom-mixture box.
"""

import io
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from toy import checkpoint
from toy.__main__ import main
from toy.presets import get_preset
from toy.train import checkpoint_path, model_set_configs

ROOT = Path(__file__).resolve().parents[1]


def mixture_file(tmp_path, spec, name="mix.json"):
    p = tmp_path / name
    p.write_text(json.dumps(spec))
    return str(p)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def two_gaussians(mean=4.0, var=1.0):
    return {"classes": [{"weights": [1, 1], "means": [-mean, mean], "covs": [var, var]},
                        {"weights": [1], "means": [0.0], "covs": [1.0]}]}


def cifar_archive(path, batch: bytes | None = None, truncate: bool = False):
    """A CIFAR-10 python archive whose data_batch_1 is `batch` (bytes of a pickle)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            payload = batch if name == "data_batch_1" and batch is not None else pickle.dumps(
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 7]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    return str(path)


def bomb(levels=12, width=40) -> bytes:
    """A 1 KB pickle of one list nested in itself `width` times, `levels` deep: every path is width^levels."""
    x: list = []
    for _ in range(levels):
        x = [x] * width
    return pickle.dumps({b"data": x, b"labels": []}, protocol=2)


def probes(tmp):
    """(family, argv, needle): each argv must fail with one line naming the problem."""
    (tmp / "afile").write_text("x")
    (tmp / "latin1.json").write_bytes('{"classes": [{"weights": [1], "means": [0], "covs": [1]}], "name": "é"}'
                                      .encode("latin-1"))
    (tmp / "deep.json").write_text(nested(100_000))
    (tmp / "deep2.json").write_text('{"classes": [{"weights": ' + nested(500) + ', "means": [0], "covs": [1]}]}')
    compare = ["compare", "--quick", "--samples", "50", "--seeds", "1", "--cache-dir", str(tmp / "cache")]
    images = ["images", "sample", "--quick", "--cache-dir", str(tmp / "cache")]
    return [
        ("paths", compare + ["--json", str(tmp / "afile" / "out.json")], "--json"),
        ("paths", compare + ["--json", "/proc/toy-nope/out.json"], "--json"),
        ("paths", compare + ["--json", str(tmp)], "folder"),
        ("paths", ["train", "--preset", "gmm1d", "--quick", "--cache-dir", str(tmp / "afile")], "--cache-dir"),
        ("paths", ["train", "--preset", "gmm1d", "--quick", "--cache-dir", "/proc/toy-nope"], "--cache-dir"),
        ("paths", images + ["--out", str(tmp / "afile" / "s.png")], "--out"),
        ("paths", ["mechanism", "--quick", "--json", "/proc/toy-nope/m.json"], "--json"),
        ("encodings", compare + ["--preset", str(tmp / "latin1.json")], "UTF-8"),
        ("encodings", compare + ["--preset", str(tmp / "missing.json")], "cannot read"),
        ("nesting", compare + ["--preset", str(tmp / "deep.json")], "nests too deeply"),
        ("nesting", compare + ["--preset", str(tmp / "deep2.json")], "class 0"),
        ("scales", compare + ["--preset", mixture_file(tmp, two_gaussians(mean=1e6), "far.json")], "supported"),
        ("scales", compare + ["--preset", mixture_file(tmp, two_gaussians(var=1e-10), "thin.json")], "supported"),
        ("scales", compare + ["--preset", mixture_file(tmp, two_gaussians(var=1e300), "wide.json")], "supported"),
        ("scales", compare + ["--preset", mixture_file(tmp, two_gaussians(var=-1.0), "neg.json")], "positive definite"),
        ("duplicates", compare + ["--methods", "cfg,cfg"], "more than once"),
        ("duplicates", compare[:-4] + ["--seeds", "1,1", "--cache-dir", str(tmp / "cache")], "more than once"),
        ("seeds", ["train", "--preset", "gmm1d", "--seed", "99999999999999999999"], "seeds must be integers"),
        ("seeds", ["train", "--preset", "gmm1d", "--seed", "-1"], "seeds must be integers"),
        ("seeds", ["mechanism", "--seed", "-3"], "seeds must be integers"),
        ("images", images + ["--n", "0"], "--n"),
        ("images", images + ["--n", "-5"], "--n"),
        ("images", images + ["--method", "foo"], "unknown method"),
        ("images", images + ["--guidance-scale", "nan"], "--guidance-scale"),
        ("images", ["images", "evaluate", "--quick", "--out", str(tmp / "ev"), "--clip", str(tmp / "noclip")], "--clip"),
        ("archives", ["images", "train", "--quick", "--data", cifar_archive(tmp / "trunc.tar.gz", truncate=True)],
         "not a readable tar archive"),
        ("archives", ["images", "train", "--quick", "--data", cifar_archive(tmp / "size.tar.gz", pickle.dumps(
            {b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, protocol=2))], "uint8 array of shape"),
        ("archives", ["images", "train", "--quick", "--data", cifar_archive(tmp / "type.tar.gz", pickle.dumps(
            {b"data": [[1, 2, 3]], b"labels": [1]}, protocol=2))], "uint8 array of shape"),
        ("archives", ["images", "train", "--quick", "--data", cifar_archive(tmp / "count.tar.gz", pickle.dumps(
            {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2]}, protocol=2))], "2 labels for 3 images"),
        ("pickles", ["images", "train", "--quick", "--data", cifar_archive(tmp / "bomb.tar.gz", bomb())], "pickle bomb"),
    ]


def test_every_hostile_argument_is_one_line_before_any_work(tmp_path, capsys):
    rows = []
    for family, argv, needle in probes(tmp_path):
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        ok = code == 2 and 1 <= len(lines) <= 2 and all(ln.startswith("error:") for ln in lines) and needle in err
        rows.append((family, " ".join(argv[:3]), needle, ok, err.strip()[:160]))
    bad = [r for r in rows if not r[3]]
    assert not bad, "\n".join(map(str, bad))
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.npz"))      # nothing was trained or saved
    assert len({r[0] for r in rows}) == 9


def test_the_pickle_bomb_is_refused_without_walking_it():
    """A subprocess with a hang guard: the refusal comes from the shared-container check, not from
    walking 40^12 paths (the guard is far above the milliseconds it takes)."""
    code = ("import pickle, sys; sys.path.insert(0, sys.argv[1]); from tests.test_fuzz import bomb; "
            "from toy.images.data import safe_load_pickle, DataError\n"
            "try:\n    safe_load_pickle(bomb())\nexcept DataError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=60)
    assert "pickle bomb" in r.stdout


def test_checkpoint_headers_and_contents(tmp_path, capsys):
    """A corrupt file where a finished checkpoint belongs: each variant is one line naming the file."""
    tcfg = model_set_configs("gmm1d", quick=True)["main"]
    path = checkpoint_path(tcfg, get_preset("gmm1d"), tmp_path, "main")
    good, header = checkpoint.load(checkpoint_path(tcfg, get_preset("gmm1d"), ROOT / "toy" / "weights", "main"),
                                   {"ema": _template(tcfg)})
    def without(key):
        checkpoint.save(path, {"ema": good["ema"], "snapshot": good["ema"]}, header["config"], {})
        _drop_header_key(path, key)
    variants = {
        "random bytes": lambda: path.write_bytes(np.random.default_rng(0).bytes(4000)),
        "no config": lambda: without("config"),
        "no meta": lambda: without("meta"),
        "NaN weights": lambda: checkpoint.save(path, {"ema": _nan(good["ema"]), "snapshot": good["ema"]},
                                               header["config"], {}),
    }
    for name, make in variants.items():
        make()
        assert main(["train", "--preset", "gmm1d", "--quick", "--cache-dir", str(tmp_path)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and str(path) in err, (name, err)
        assert "allow_pickle" not in err and "Traceback" not in err
        if name == "NaN weights":
            assert "NaN" in err


def _template(tcfg):
    from flax import nnx

    from toy.train import model_config
    return nnx.split(nnx.eval_shape(lambda: model_config(tcfg, get_preset("gmm1d")).build(0)))[1]


def _nan(tree):
    import jax
    return jax.tree.map(lambda a: np.full(a.shape, np.nan, np.float32), tree)


def _drop_header_key(path, key):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(bytes(arrays["__header__"]).decode())
    h.pop(key)
    arrays["__header__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("text,needle", [
    ("{broken", "not valid JSON"),
    (nested(100_000), "nests too deeply"),
    (json.dumps(two_gaussians(var=1e300)), "supported"),
    (json.dumps(two_gaussians(mean=1e6)), "supported"),
    (json.dumps({"classes": [{"weights": [1], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}]}), "positive definite"),
    (json.dumps({"classes": "nope"}), "classes"),
])
def test_custom_mixture_text_is_one_error(text, needle):
    from toy.errors import ToyError
    from toy.presets import parse_json
    with pytest.raises(ToyError, match=needle) as e:
        parse_json(text)
    assert "\n" not in str(e.value)


# -- the second campaign: special files, the cache variable, outputs, no-op settings, seed edges, ---
# -- the figure script's parser, the app's text and URL ------------------------------------------

def _one_error_before_work(argv, needle, capsys, tmp_path, env=None, monkeypatch=None):
    """argv ends in exit 2 with one or two `error:` lines holding `needle`, no traceback, nothing
    trained or written, and fast (before any work: no training, no sampling)."""
    import time
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    t = time.perf_counter()
    code = main(argv)
    took = time.perf_counter() - t
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2 and 1 <= len(lines) <= 2 and all(ln.startswith("error:") for ln in lines), (argv, err)
    assert needle in err and "Traceback" not in err, (needle, err)
    assert took < 30, f"{argv}: {took:.0f} s to the error: work was done first"
    assert not any(tmp_path.rglob("*.npz")) and not any(tmp_path.rglob("*.json.*.tmp"))


def test_special_files_are_refused_not_read(tmp_path, capsys):
    """A FIFO, a link to /dev/zero or /dev/urandom, or a folder where a mixture file belongs: one line
    naming the path, at once (no hang, no unbounded read)."""
    import os
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "random.json").symlink_to("/dev/urandom")
    (tmp_path / "dir.json").mkdir()
    base = ["compare", "--quick", "--samples", "50", "--seeds", "1", "--cache-dir", str(tmp_path / "cache")]
    for name, kind in [("pipe.json", "FIFO"), ("zero.json", "character device"), ("random.json", "character device"),
                       ("dir.json", "folder")]:
        _one_error_before_work(base + ["--preset", str(tmp_path / name)], kind, capsys, tmp_path)
        # and through the reader every caller uses
        from toy.errors import ToyError
        from toy.presets import load_json
        with pytest.raises(ToyError, match="not a regular file"):
            load_json(tmp_path / name)


def test_checkpoint_and_archive_special_cases(tmp_path, capsys):
    """A plain .npy, or a FIFO, where a checkpoint belongs; an archive member that unpacks too large
    (refused from its header, before reading); an archive with no image of the asked classes."""
    import os
    from toy.errors import CheckpointError, ToyError
    from toy.images.data import MAX_MEMBER_BYTES, load_cifar10
    npy = tmp_path / "c.npz"
    np.save(open(npy, "wb"), np.zeros(3))
    with pytest.raises(CheckpointError, match="not a toy checkpoint"):
        checkpoint.read_header(npy)
    os.mkfifo(tmp_path / "f.npz")
    with pytest.raises(CheckpointError, match="FIFO"):
        checkpoint.read_header(tmp_path / "f.npz")
    big = tmp_path / "big.tar.gz"
    with tarfile.open(big, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = MAX_MEMBER_BYTES + 1 if name == "data_batch_1" else 4
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(ToyError, match="unpacks to"):
        load_cifar10(big)
    none_of_them = cifar_archive(tmp_path / "other.tar.gz")            # labels 1 and 7 only
    with pytest.raises(ToyError, match="no image of class"):
        load_cifar10(none_of_them, classes=(3, 5))


def test_outputs_and_the_cache_variable_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    import os
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "out.fifo")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    compare = ["compare", "--quick", "--samples", "50", "--seeds", "1", "--methods", "cfg"]
    train = ["train", "--preset", "gmm1d", "--quick"]
    for env, needle in [({"TOY_CACHE_DIR": str(tmp_path / "afile")}, "TOY_CACHE_DIR"),
                        ({"TOY_CACHE_DIR": str(tmp_path / "afile" / "sub")}, "TOY_CACHE_DIR")]:
        _one_error_before_work(train, needle, capsys, tmp_path, env, monkeypatch)
    if os.geteuid() != 0:           # root writes anywhere: a read-only folder stops only ordinary users
        _one_error_before_work(train, "TOY_CACHE_DIR", capsys, tmp_path, {"TOY_CACHE_DIR": str(ro)}, monkeypatch)
    monkeypatch.setenv("TOY_CACHE_DIR", str(tmp_path / "cache"))
    for json_path, needle in [(tmp_path / "out.fifo", "FIFO"), ("/dev/full", "character device"),
                              (tmp_path / ("x" * 250 + ".json"), "atomic write adds"),
                              (tmp_path / ("y" * 300 + ".json"), "--json")]:
        _one_error_before_work(compare + ["--json", str(json_path)], needle, capsys, tmp_path)
    assert (tmp_path / "out.fifo").exists() and not (tmp_path / "out.fifo").is_file()   # left as it was


def test_a_symlinked_output_writes_its_target_and_a_late_failure_keeps_the_results(tmp_path, capsys, monkeypatch):
    from toy import files
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    files.write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}       # the link is followed, kept
    # the disk fills after the work: the results land in the temporary folder, said in one line
    real = files.write_json

    def full(path, obj, indent=1):
        if Path(path).parent == tmp_path:
            raise OSError(28, "No space left on device")
        return real(path, obj, indent)
    monkeypatch.setattr(files, "write_json", full)
    assert files.write_json_safely(tmp_path / "out.json", {"b": 2}, "--json") is False
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --json") and "No space left" in err and len(err.splitlines()) == 1
    saved = err.split("saved in ")[1].strip("'")
    assert json.loads(Path(saved).read_text()) == {"b": 2}
    Path(saved).unlink()


def test_settings_that_make_a_method_a_no_op_are_refused(tmp_path, capsys, monkeypatch):
    from toy.guidance import GuidanceConfig, interval_problem, steps_in_interval
    monkeypatch.setenv("TOY_CACHE_DIR", str(tmp_path / "cache"))
    base = ["compare", "--quick", "--samples", "50", "--seeds", "1"]
    _one_error_before_work(base + ["--methods", "s2", "--interval", "0.5", "0.5", "--steps", "8"], "covers no step",
                           capsys, tmp_path)
    _one_error_before_work(base + ["--methods", "fixed-block", "--fixed-blocks", ""], "fixed blocks", capsys, tmp_path)
    _one_error_before_work(base + ["--methods", "s2", "--num-drop", "0"], "blocks dropped per mask", capsys, tmp_path)
    # the steps an interval covers, as the sampler places them (i / (T − 1)): 7 steps sit at sixths
    assert steps_in_interval((0.5, 0.5), 7) == [3] and steps_in_interval((0.5, 0.5), 8) == []
    assert steps_in_interval((0.1, 0.9), 32) == list(range(4, 28))
    assert interval_problem(GuidanceConfig(method="cfg", interval=(0.5, 0.5)), 8) is None      # CFG reads none
    assert "0.429, 0.571" in interval_problem(GuidanceConfig(method="s2", interval=(0.5, 0.5)), 8)


def test_every_documented_seed_works_end_to_end():
    """Derived seeds wrap inside [0, 2³¹ − 1] instead of leaving it, and the shipped seeds are unchanged."""
    from toy.images.pipeline import model_configs, quick_config
    from toy.images.data import load_digits
    from toy.train import derived_seed
    top = 2**31 - 1
    for cfg in model_set_configs("gmm1d", quick=True, seed=top).values():
        cfg.validate()
    assert model_set_configs("gmm1d", quick=True, seed=top)["small"].seed == 0
    assert model_set_configs("gmm1d", quick=True)["small"].seed == 1 == derived_seed(0)
    for tcfg, _ in model_configs(quick_config(seed=top), load_digits()).values():
        tcfg.validate()


def test_the_figure_script_answers_bad_options_with_one_line(tmp_path, capsys):
    from toy.figures import main as figures
    for argv, needle in [(["--bogus"], "unrecognized arguments"), (["--only"], "expected at least one"),
                         (["--only", "fig99"], "fig99"), (["--set", "scale=2"], "paper's settings")]:
        assert figures(argv + ["--out", str(tmp_path / "f")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and needle in err, err


def test_images_sample_writes_two_distinct_files():
    from toy.images.cli import sample_paths
    assert sample_paths("grid.npz") == (Path("grid.png"), Path("grid.npz"))
    assert sample_paths("grid.png") == (Path("grid.png"), Path("grid.npz"))
    assert len(set(sample_paths("out/grid"))) == 2


@pytest.mark.parametrize("text,needle", [
    ('{"classes": [{"weights": [' + "9" * 5000 + '], "means": [0], "covs": [1]}]}', "digits"),
    ('{"classes": [{"weights": [1], "means": [0], "covs": [1]}], "class_names": ["\\ud800"]}', "surrogate"),
    ("x" * 200_000, "characters"),
])
def test_the_apps_text_and_links_are_guarded(text, needle, gmm1d_models):
    """The app reads pasted text and links through the same guarded readers: an error line, the page
    still there, never an exception."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params.update({"preset": "custom", "source": "exact closed form", "methods": "cfg", "custom": text[:9000]})
    at.run()
    assert not at.exception
    if needle != "characters":
        assert len(at.error) == 1 and at.error[0].value.startswith("error:") and needle in at.error[0].value
    at.text_area(key="custom").set_value(text)
    at.run()
    assert not at.exception and len(at.error) == 1 and needle in at.error[0].value
    assert at.sidebar and at.title                                       # the page stays usable


def test_a_full_disk_after_training_keeps_the_trained_network(tmp_path, monkeypatch):
    """The final save fails (the disk filled during training): the network is saved in the temporary
    folder under its checkpoint name, and the one error says where; it loads from there."""
    import tempfile

    from toy import checkpoint as ck
    from toy.errors import ToyError
    from toy.train import TrainConfig, train
    real = ck.save

    def full(path, *a, **k):
        if Path(path).parent == tmp_path:
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)
    monkeypatch.setattr(ck, "save", full)
    tcfg = TrainConfig(preset="gmm1d", width=16, num_blocks=2, steps=20, batch=16, warmup=2, chunk=10, seed=2**31 - 1)
    with pytest.raises(ToyError, match="saved in") as e:
        train(tcfg, folder=tmp_path, progress=False)
    rescue = Path(str(e.value).rsplit("saved in ", 1)[1].split("'")[1])
    assert rescue.parent == Path(tempfile.gettempdir()) and rescue.exists()
    monkeypatch.setattr(ck, "save", real)
    rescue.rename(tmp_path / rescue.name)
    assert train(tcfg, folder=tmp_path, progress=False).loaded           # moved into the cache: it loads
