"""Shared fixtures: one quick-trained model set in a session-private cache (never ~/.cache)."""

import os

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy-cache")
    os.environ["TOY_CACHE_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def gmm1d_models(cache_dir):
    """The quick model set of gmm1d, trained once per test session (~30 s on 2 cores)."""
    from toy.train import train_models

    return train_models("gmm1d", quick=True, folder=cache_dir, progress=False)
