"""Image data for the DiT experiment: CIFAR-10 from its official archive, read safely, and
an embedded default that needs no download (scikit-learn's 8×8 digits).

CIFAR-10's python version is a tar of pickled dicts. Pickle can run code, so batches are read with
`SafeUnpickler`, which builds only plain numpy arrays, lists, dicts, strings and numbers and
refuses anything else. The binary version (fixed-size records, no pickle) is read too. Nothing is
downloaded unless asked (`download_cifar10`), and a download is checked against the published MD5.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from toy.errors import ToyError
from toy.layers import drop_labels

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_DEFAULT = (7, 1)                       # horse, automobile: the paper's appendix B.1.3
DIGITS_DEFAULT = (7, 1)
CIFAR10_URLS = {   # the official archives and the MD5 sums published beside them
    "python": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "binary": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
}


class DataError(ToyError):
    """A dataset file is missing, corrupt, unsafe or does not match its checksum."""


# -- safe unpickling -----------------------------------------------------------------------------

class SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays (and their dtypes) besides pickle's own plain types.

    Pickle builds dicts, lists, tuples, strings, bytes and numbers without calling `find_class`;
    every other object goes through it, so allowing just the array constructors refuses the rest
    (an `os.system` call in a hostile file raises DataError instead of running)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}      # how protocol 2 writes bytes: str → bytes, nothing else

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: only plain arrays, lists, dicts, strings "
                        f"and numbers are allowed in a dataset file")


def safe_load_pickle(data: bytes) -> object:
    """The plain data a pickle holds (numpy arrays, lists, dicts, strings, numbers), never an object
    that runs code, checked in bounded work (see _check_plain)."""
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError:
        raise
    except Exception as e:   # truncated or garbled file
        raise DataError(f"not a readable pickle ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    _check_plain(obj)
    return obj


MAX_DEPTH = 20                  # nesting of containers in a dataset pickle
MAX_ELEMENTS = 5_000_000        # container entries checked at most (a CIFAR-10 batch has about 30,000)


def _check_plain(obj) -> None:
    """Refuse anything but plain data, in work bounded by MAX_ELEMENTS: each container is visited
    once, and a container that appears in several places is refused, since a dataset has no reason
    to share one and a "pickle bomb" (a list holding itself 40 times, a dozen levels deep) relies on
    exactly that to make a walk of every path take forever."""
    seen, budget, stack = set(), MAX_ELEMENTS, [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DataError(f"dataset pickle nests deeper than {MAX_DEPTH} levels")
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise DataError("refusing an object array in a dataset pickle")
        elif isinstance(o, (dict, list, tuple)):
            if len(o) and id(o) in seen:
                raise DataError("dataset pickle uses one container in several places (a pickle bomb?); refused")
            seen.add(id(o))
            children = [c for kv in o.items() for c in kv] if isinstance(o, dict) else list(o)
            budget -= len(children)
            if budget < 0:
                raise DataError(f"dataset pickle holds more than {MAX_ELEMENTS:,} entries; refused")
            stack += [(c, depth + 1) for c in children]
        elif not isinstance(o, (str, bytes, int, float, bool, type(None))):
            raise DataError(f"refusing {type(o).__name__} in a dataset pickle")


# -- CIFAR-10 -------------------------------------------------------------------------------------

MAX_MEMBER_BYTES = 64 << 20     # one batch file of the archive (the official ones are 30.7 MB)


def _batch_files(tar: tarfile.TarFile, split: str, suffix: str, version: str):
    """(name, bytes) of each batch file of a split, in order."""
    names = [f"data_batch_{i}{suffix}" for i in range(1, 6)] if split == "train" else [f"test_batch{suffix}"]
    members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
    for name in names:
        if name not in members:
            raise DataError(f"the archive has no {name}; is it the CIFAR-10 {version} version?")
        if members[name].size > MAX_MEMBER_BYTES:            # checked before reading, and the read stops at the cap
            raise DataError(f"{name} unpacks to {members[name].size:,} bytes; a CIFAR-10 batch is about 31 MB "
                            f"(at most {MAX_MEMBER_BYTES:,} are read)")
        raw = tar.extractfile(members[name]).read(MAX_MEMBER_BYTES + 1)
        if len(raw) > MAX_MEMBER_BYTES:
            raise DataError(f"{name} holds more than {MAX_MEMBER_BYTES:,} bytes; refused")
        yield name, raw


def _python_batches(tar: tarfile.TarFile, split: str):
    for name, raw in _batch_files(tar, split, "", "python"):
        d = safe_load_pickle(raw)
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise DataError(f"{name} is not a CIFAR-10 batch (no data/labels)")
        data, labels = d[b"data"], d[b"labels"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{name}: data must be a uint8 array of shape [n, 3072], got {got}")
        if not isinstance(labels, list) or not all(type(v) is int for v in labels):
            raise DataError(f"{name}: labels must be a list of integers")
        if len(labels) != len(data):
            raise DataError(f"{name}: {len(labels)} labels for {len(data)} images")
        labels = np.asarray(labels, np.int64)
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{name}: labels must be class ids 0..9, got {labels.min()}..{labels.max()}")
        yield data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels                    # [n, 32, 32, 3]


def _binary_batches(tar: tarfile.TarFile, split: str):
    for name, raw in _batch_files(tar, split, ".bin", "binary"):
        raw = np.frombuffer(raw, np.uint8)
        if raw.size % 3073:
            raise DataError(f"{name} is not a whole number of 3073-byte CIFAR records")
        rec = raw.reshape(-1, 3073)                                                          # label byte + pixels
        yield rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0].astype(np.int64)


def read_cifar10(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """All images [n, 32, 32, 3] uint8 and labels [n] of a split, from the official .tar.gz
    (python or binary version) without extracting it."""
    path = Path(path)
    if split not in ("train", "test"):
        raise ToyError(f"split must be train or test, got {split!r}")
    if not path.is_file():
        raise DataError(f"no CIFAR-10 archive at {str(path)!r}: give the path of cifar-10-python.tar.gz "
                        f"(or the binary version), or pass --download")
    try:
        with tarfile.open(path, "r:*") as tar:
            names = [Path(m.name).name for m in tar.getmembers()]
            reader = _binary_batches if any(n.endswith(".bin") for n in names) else _python_batches
            xs, ys = zip(*reader(tar, split))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{str(path)!r} is not a readable tar archive ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else 'truncated?'})") from None
    return np.concatenate(xs), np.concatenate(ys)


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar10(folder: str | Path, version: str = "python", *, url: str | None = None,
                     md5: str | None = None, progress: bool = True) -> Path:
    """Fetch the official archive into `folder` (only when the user asks), resuming a partial
    `.part` file with an HTTP range request, and verify the published MD5. A mismatch deletes the
    file and raises DataError. Returns the archive's path (at once if it is already there and valid)."""
    if version not in CIFAR10_URLS:
        raise ToyError(f"CIFAR-10 version must be one of {', '.join(CIFAR10_URLS)}, got {version!r}")
    url0, md50 = CIFAR10_URLS[version]
    url, md5 = url or url0, md5 or md50
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / Path(url).name
    if dest.exists():
        if md5sum(dest) == md5:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            if have and resp.status != 206:          # the server ignored the range: start over
                have = 0
            total = int(resp.headers.get("Content-Length", 0)) + have
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total or None, initial=have, unit="B", unit_scale=True, desc=dest.name)
            with open(part, "ab" if have else "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except OSError as e:
        raise DataError(f"download of {url} stopped ({e}); run the same command again to resume "
                        f"from {part.stat().st_size if part.exists() else 0} bytes") from None
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DataError(f"checksum mismatch for {dest.name}: MD5 {got}, expected {md5}; the partial file "
                        f"was deleted, run the download again")
    os.replace(part, dest)
    return dest


# -- datasets -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image set in [−1, 1], [n, H, W, C], with labels re-indexed to 0..C−1 in the order
    of `classes` (the ids in the source set). It is also a training data source for toy/train.py."""

    name: str
    images: np.ndarray                    # [n, H, W, C] float32 in [−1, 1]
    labels: np.ndarray                    # [n] int32 in 0..C−1
    classes: tuple[int, ...]              # source class ids, in label order
    class_names: tuple[str, ...]
    flip: bool = False                    # random horizontal flips while training (natural images)

    @property
    def image_size(self) -> int:
        return self.images.shape[1]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    @property
    def dim(self) -> int:
        return int(np.prod(self.images.shape[1:]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def sigma_data(self) -> float:
        return float(self.images.std())

    def flat(self) -> np.ndarray:
        return self.images.reshape(len(self.images), -1)                     # [n, d]

    @functools.cached_property
    def sha(self) -> str:
        """Digest of the images and labels, hashed once per dataset (train() asks for it twice)."""
        return hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """What identifies the data in a checkpoint's config."""
        return {"name": self.name, "classes": list(self.classes), "shape": list(self.images.shape), "sha": self.sha}

    def arrays(self) -> tuple[jax.Array, jax.Array]:
        return jnp.asarray(self.flat()), jnp.asarray(self.labels, jnp.int32)

    def sample_batch(self, data, key: jax.Array, n: int, *, label_dropout: float = 0.0):
        """n random training images (with replacement) and labels, ∅ with probability label_dropout."""
        images, labels = data
        k_idx, k_drop, k_flip = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (n,), 0, images.shape[0])                    # [n]
        x = images[idx]                                                              # [n, d]
        if self.flip:
            img = x.reshape((n,) + self.images.shape[1:])                            # [n, H, W, C]
            img = jnp.where(jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1)), img[:, :, ::-1], img)
            x = img.reshape(n, -1)
        return x, drop_labels(labels[idx], k_drop, label_dropout, self.null_label)

    def subset(self, per_class: int) -> "ImageData":
        """The first `per_class` images of each class (for quick runs)."""
        keep = np.concatenate([np.flatnonzero(self.labels == c)[:per_class] for c in range(self.num_classes)])
        return dataclasses.replace(self, images=self.images[keep], labels=self.labels[keep])


def _select(x: np.ndarray, y: np.ndarray, classes, num_source_classes: int, names) -> tuple:
    classes = tuple(int(c) for c in classes)
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise ToyError(f"classes must be distinct class ids, got {classes}")
    for c in classes:
        if not 0 <= c < num_source_classes:
            raise ToyError(f"class id {c} is out of range: choose ids in 0..{num_source_classes - 1}")
    keep = np.isin(y, classes)
    missing = [names[c] for c in classes if not np.any(y == c)]
    if missing:
        raise ToyError(f"the data holds no image of class(es) {', '.join(missing)}: choose classes it has")
    lut = np.zeros(num_source_classes, np.int32)
    lut[list(classes)] = np.arange(len(classes))
    return x[keep], lut[y[keep]], classes, tuple(names[c] for c in classes)


def load_digits(classes=DIGITS_DEFAULT) -> ImageData:
    """scikit-learn's 8×8 handwritten digits (shipped inside the package: no download)."""
    from sklearn.datasets import load_digits as sk_digits
    d = sk_digits()
    x = (d.images.astype(np.float32) / 8.0 - 1.0)[..., None]                    # [1797, 8, 8, 1] in [−1, 1]
    x, y, classes, names = _select(x, d.target, classes, 10, [str(i) for i in range(10)])
    return ImageData("digits", x, y, classes, names, flip=False)


def load_cifar10(path: str | Path, classes=CIFAR10_DEFAULT, split: str = "train",
                 image_size: int = 32) -> ImageData:
    """CIFAR-10 images of the chosen classes from the official archive; `image_size` 32 keeps the
    originals, 16 or 8 average-pools them (CPU-sized runs)."""
    x, y = read_cifar10(path, split)
    if image_size not in (8, 16, 32):
        raise ToyError(f"image_size must be 8, 16 or 32 for CIFAR-10, got {image_size}")
    x, y, classes, names = _select(x, y, classes, 10, CIFAR10_CLASSES)
    x = x.astype(np.float32) / 127.5 - 1.0                                      # [n, 32, 32, 3]
    f = 32 // image_size
    if f > 1:
        x = x.reshape(len(x), image_size, f, image_size, f, 3).mean(axis=(2, 4))
    return ImageData("cifar10", x.astype(np.float32), y, classes, names, flip=True)


def load_dataset(data: str = "digits", classes=None, image_size: int = 32) -> ImageData:
    """`digits` (the embedded default) or the path of a CIFAR-10 archive."""
    if data == "digits":
        return load_digits(classes if classes is not None else DIGITS_DEFAULT)
    return load_cifar10(data, classes if classes is not None else CIFAR10_DEFAULT, image_size=image_size)
