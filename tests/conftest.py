"""Shared fixtures: quick-trained models in one cache for the whole test run (never ~/.cache).

The pytest-xdist workers share the cache folder; `trained` takes a file lock per model set, so a
set is trained once per run by whichever worker needs it first and loaded by the others.
"""

import contextlib
import fcntl
import os
import tempfile

import pytest

# One persistent XLA compilation cache for the whole run, shared by the xdist workers and every
# subprocess they start (CLI runs, notebook kernels, the served app): a sampler compiled by one is
# loaded by the others instead of compiled again. Set before anything imports jax.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"s2-toy-xla-{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

# The app prepares the other presets in the background after its first page; in the tests that work
# would compete with the other tests for the two cores, so it is off except where a test turns it on.
os.environ.setdefault("TOY_APP_PREPARE", "0")

# As every entry point does: one JAX CPU device per core for the samplers (importing toy alone changes nothing).
from toy import runtime  # noqa: E402

runtime.setup()

# Longest modules first. With `--dist loadfile --no-loadscope-reorder` xdist hands out whole modules in
# collection order, a worker taking the next one as it finishes; a long module handed out last ran
# alone on one worker for a minute or more. The seconds (runs of the suite on 2 cores) only set the
# order; a module not listed runs after these, and the order of tests inside a module is kept.
MODULE_SECONDS = {"test_figures.py": 260, "test_notebooks.py": 230, "test_app.py": 210, "test_train.py": 118,
                  "test_dit.py": 104, "test_prefix.py": 82, "test_images.py": 50, "test_bench.py": 50,
                  "test_guidance.py": 49, "test_diffusion.py": 42, "test_browser.py": 45, "test_mechanism.py": 30,
                  "test_features.py": 16, "test_plugins.py": 15, "test_mixtures.py": 13, "test_cli.py": 14,
                  "test_nets.py": 11, "test_fuzz.py": 11}


# test_images.py is handed out just before the notebooks: its quick pipeline compiles the DiT samplers and
# the feature classifier that the images notebook (the fourth) then loads from the persistent cache.
JUST_BEFORE = {"test_images.py": "test_notebooks.py"}


def pytest_collection_modifyitems(items):
    def key(item):
        name = item.path.name
        return -MODULE_SECONDS.get(JUST_BEFORE.get(name, name), 0), name not in JUST_BEFORE
    items.sort(key=key)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "toy-cache-shared"
    d.mkdir(exist_ok=True)
    os.environ["TOY_CACHE_DIR"] = str(d)
    return d


@contextlib.contextmanager
def locked(cache_dir, name):
    with open(cache_dir / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def trained(cache_dir):
    """trained("gmm1d") → the quick model set of a preset; trained("images") → the quick DiT set."""
    def get(name):
        with locked(cache_dir, name):
            if name == "images":
                from toy.images.data import load_digits
                from toy.images.pipeline import quick_config, train_image_models
                return train_image_models(quick_config(), load_digits(), folder=cache_dir, progress=False)
            from toy.train import train_models
            return train_models(name, quick=True, folder=cache_dir, progress=False)
    return get


@pytest.fixture(scope="session")
def gmm1d_models(trained):
    """The quick model set of gmm1d (~30 s on 2 cores the first time in a run)."""
    return trained("gmm1d")
