"""Image data: the CIFAR-10 archive reader (python and binary versions), the safe unpickler,
the checksummed resumable download, the embedded digits."""

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import jax
import numpy as np
import pytest

from toy.images import data as D


def _batch(rng, n):
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)        # CIFAR's channel-first rows
    return images, labels


def _add(tar, name, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar_archive(path, n=20, version="python", seed=0, hostile=None):
    """A small archive in the exact layout of the official one; returns the train images/labels."""
    rng = np.random.default_rng(seed)
    all_x, all_y = [], []
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            x, y = _batch(rng, n)
            if name != "test_batch":
                all_x.append(x), all_y.append(y)
            if version == "python":
                d = {b"batch_label": name.encode(), b"labels": y.tolist(), b"data": x.reshape(n, 3072),
                     b"filenames": [f"{i}.png".encode() for i in range(n)]}
                payload = hostile if (hostile is not None and name == "data_batch_2") else pickle.dumps(d, protocol=2)
                _add(tar, f"cifar-10-batches-py/{name}", payload)
            else:
                rec = np.concatenate([y[:, None].astype(np.uint8), x.reshape(n, 3072)], axis=1)
                _add(tar, f"cifar-10-batches-bin/{name}.bin", rec.tobytes())
        if version == "python":
            _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [c.encode() for c in D.CIFAR10_CLASSES]}))
    return np.concatenate(all_x).transpose(0, 2, 3, 1), np.concatenate(all_y)


@pytest.mark.parametrize("version", ["python", "binary"])
def test_reads_both_archive_versions_exactly(tmp_path, version):
    path = tmp_path / "cifar.tar.gz"
    x_ref, y_ref = make_cifar_archive(path, version=version)
    x, y = D.read_cifar10(path)
    np.testing.assert_array_equal(x, x_ref)           # [n, 32, 32, 3], channels last
    np.testing.assert_array_equal(y, y_ref)
    assert x.shape == (100, 32, 32, 3)
    xt, _ = D.read_cifar10(path, "test")
    assert len(xt) == 20
    # class selection: horse (7) → label 0, automobile (1) → label 1, pixels scaled to [−1, 1]
    ds = D.load_cifar10(path)
    assert ds.classes == (7, 1) and ds.class_names == ("horse", "automobile")
    np.testing.assert_array_equal(np.sort(ds.labels), np.sort(np.concatenate([np.zeros((y_ref == 7).sum()),
                                                                               np.ones((y_ref == 1).sum())])))
    first_horse = x_ref[np.flatnonzero(y_ref == 7)[0]].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(ds.images[np.flatnonzero(ds.labels == 0)[0]], first_horse, atol=1e-6)
    small = D.load_cifar10(path, classes=(3, 5, 7), image_size=8)
    assert small.images.shape[1:] == (8, 8, 3) and small.num_classes == 3
    np.testing.assert_allclose(small.images.mean(), D.load_cifar10(path, classes=(3, 5, 7)).images.mean(), atol=1e-5)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_hostile_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.tar.gz"
    make_cifar_archive(path, hostile=pickle.dumps({b"data": Evil(), b"labels": [1]}))
    with pytest.raises(D.DataError, match="refusing to unpickle"):
        D.read_cifar10(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    # plain containers and arrays still load; an object array does not
    assert D.safe_load_pickle(pickle.dumps({b"a": [1, 2.5, "s"], b"x": np.arange(3)}))[b"a"] == [1, 2.5, "s"]
    with pytest.raises(D.DataError):
        D.safe_load_pickle(pickle.dumps(np.array([{"a": 1}], dtype=object)))
    with pytest.raises(D.DataError, match="not a readable pickle"):
        D.safe_load_pickle(b"\x80\x02garbage")


def test_missing_and_corrupt_archives_are_clear_errors(tmp_path):
    with pytest.raises(D.DataError, match="no CIFAR-10 archive"):
        D.read_cifar10(tmp_path / "nope.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(D.DataError, match="not a readable tar"):
        D.read_cifar10(bad)
    with pytest.raises(D.ToyError, match="class id 12"):
        D.load_digits(classes=(1, 12))


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honouring `Range: bytes=N-` (as the CIFAR host does)."""
    payload = b""
    ranges_seen: list = []

    def do_GET(self):
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.ranges_seen.append(start)
        body = self.payload[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def server(tmp_path):
    archive = tmp_path / "src.tar.gz"
    make_cifar_archive(archive, n=10)
    RangeHandler.payload = archive.read_bytes()
    RangeHandler.ranges_seen = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/cifar-10-python.tar.gz", RangeHandler.payload
    httpd.shutdown()


def test_download_checks_md5_and_resumes(tmp_path, server):
    url, payload = server
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "dl"
    # wrong checksum: an error naming both sums, and no partial file left behind
    with pytest.raises(D.DataError, match="checksum mismatch"):
        D.download_cifar10(dest, url=url, md5="0" * 32, progress=False)
    assert not list(dest.iterdir())
    # a partial file from an interrupted run is resumed with a range request
    (dest / "cifar-10-python.tar.gz.part").write_bytes(payload[:1000])
    path = D.download_cifar10(dest, url=url, md5=md5, progress=False)
    assert RangeHandler.ranges_seen == [1000]
    assert path.read_bytes() == payload and not (dest / "cifar-10-python.tar.gz.part").exists()
    assert len(D.read_cifar10(path)[0]) == 50
    # already there and valid: no request at all
    D.download_cifar10(dest, url=url + "-unreachable", md5=md5, progress=False)


def test_digits_and_batches():
    ds = D.load_digits()
    assert ds.images.shape[1:] == (8, 8, 1) and ds.classes == (7, 1)
    assert ds.images.min() >= -1 and ds.images.max() <= 1 and set(np.unique(ds.labels)) == {0, 1}
    data = ds.arrays()
    x, y = ds.sample_batch(data, jax.random.key(0), 4000, label_dropout=0.25)
    assert x.shape == (4000, 64)
    np.testing.assert_allclose(np.mean(np.asarray(y) == ds.null_label), 0.25, atol=0.03)
    # every drawn image is a real one
    assert np.all(np.isclose(np.asarray(x)[:50, None], ds.flat()[None]).all(-1).any(-1))
