"""Features of real and generated images, and the metrics computed on them.

Default features: the penultimate layer of a small classifier trained on the same real images
(figures say so). With CLIP weights in a local folder (`clip_feature_net`, the optional `clip`
extra: transformers ≤ 4.57 ships Flax CLIP) the features are CLIP image embeddings, as in the paper.
The classifier always gives the class accuracy of generations. Metrics:
Fréchet distance to the real features, class accuracy, precision and recall (k-NN manifolds of
Kynkäänniemi et al. 2019), and class separation (silhouette of the generated features by target
class). `tsne` embeds real and generated features together so that panels share coordinates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy.errors import ToyError


class Classifier(nnx.Module):
    """Flat image → 64 features → class logits."""

    def __init__(self, dim: int, num_classes: int, rngs: nnx.Rngs, width: int = 128, feat: int = 64):
        self.fc1 = nnx.Linear(dim, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, feat, rngs=rngs)
        self.head = nnx.Linear(feat, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        return nnx.gelu(self.fc2(nnx.gelu(self.fc1(x))))                          # [n, 64]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))                                        # [n, C]


@dataclass(frozen=True)
class FeatureNet:
    """A trained classifier as a pure function of arrays (features, logits)."""

    graphdef: nnx.GraphDef
    params: nnx.State
    name: str = "classifier trained on the real images (penultimate layer)"

    def features(self, x) -> np.ndarray:
        return np.asarray(_features(self.graphdef, self.params, jnp.asarray(x)))

    def predict(self, x) -> np.ndarray:
        return np.asarray(_logits(self.graphdef, self.params, jnp.asarray(x))).argmax(-1)


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef, params, x):
    return nnx.merge(graphdef, params).features(x)


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, x):
    return nnx.merge(graphdef, params)(x)


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *, steps: int = 600,
                     batch: int = 128, noise: float = 0.1, seed: int = 0) -> FeatureNet:
    """Cross-entropy on the real images (flat [n, d]) with a little Gaussian noise, so that it reads
    slightly imperfect generations the way it reads real ones."""
    x = jnp.asarray(images.reshape(len(images), -1), jnp.float32)
    y = jnp.asarray(labels, jnp.int32)
    model = Classifier(x.shape[1], num_classes, nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    tx = optax.adamw(2e-3, weight_decay=1e-4)
    opt = tx.init(params)

    def loss_fn(p, key):
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (batch,), 0, x.shape[0])
        xb = x[idx] + noise * jax.random.normal(k2, (batch, x.shape[1]))
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(xb), y[idx]).mean()

    def step(carry, i):
        p, o = carry
        loss, g = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(jax.random.key(seed), i))
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    (params, _), _ = jax.jit(lambda p, o: jax.lax.scan(step, (p, o), jnp.arange(steps)))(params, opt)
    return FeatureNet(graphdef, params)


# -- CLIP ------------------------------------------------------------------------------------------

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


@dataclass(frozen=True, eq=False)
class ClipFeatures:
    """CLIP image embeddings of flat images in [−1, 1] (resized, 3 channels, CLIP-normalised)."""

    model: object                 # transformers.FlaxCLIPModel (loaded without weights of its own)
    params: object                # its weights
    image_shape: tuple[int, int, int]
    name: str = "CLIP image embeddings"
    batch: int = 64

    def features(self, x) -> np.ndarray:
        x = np.asarray(x, np.float32)
        b = self.batch
        out = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]                                                        # [≤ b, H·W·C]
            # the last batch is padded to b rows: one compiled program serves every batch
            padded = np.concatenate([chunk, np.zeros((b - len(chunk), x.shape[1]), np.float32)])
            out.append(np.asarray(_clip_embed(self.params, padded, model=self.model,
                                              image_shape=tuple(self.image_shape)))[:len(chunk)])
        return np.concatenate(out)


@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _clip_embed(params, x, *, model, image_shape):
    """CLIP's preprocessing and image tower on one batch of flat images [b, H·W·C] in [−1, 1]."""
    H, W, C = image_shape
    size = model.config.vision_config.image_size
    img = x.reshape(-1, H, W, C)
    img = jnp.repeat(img, 3, axis=-1) if C == 1 else img                              # [b, H, W, 3]
    img = jax.image.resize(img, (img.shape[0], size, size, 3), "bilinear")             # [b, S, S, 3]
    img = ((img + 1) / 2 - CLIP_MEAN) / CLIP_STD
    return model.get_image_features(pixel_values=img.transpose(0, 3, 1, 2), params=params)   # [b, E]


def check_clip_folder(weights_dir: str) -> None:
    """A CLIP folder must hold config.json (a JSON object of a CLIP model) and flax_model.msgpack:
    checked before any work, so a bad folder is one clear line, not a traceback from transformers."""
    import json
    from pathlib import Path
    folder = Path(weights_dir)
    if not (folder / "config.json").is_file() or not (folder / "flax_model.msgpack").is_file():
        raise ToyError(f"--clip {weights_dir}: expected a folder with config.json and flax_model.msgpack (Flax CLIP "
                       f"weights, e.g. openai/clip-vit-base-patch32); PyTorch .bin files are not loaded")
    from toy.files import read_bytes, regular_file
    regular_file(folder / "flax_model.msgpack", f"--clip {weights_dir}: the weights", 8 << 30)
    raw = read_bytes(folder / "config.json", f"--clip {weights_dir}: config.json", 1 << 20)
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ToyError(f"--clip {weights_dir}: config.json is not valid JSON ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "clip" or not isinstance(cfg.get("vision_config"), dict):
        raise ToyError(f"--clip {weights_dir}: config.json does not describe a CLIP model "
                       f"(needs \"model_type\": \"clip\" and a \"vision_config\" object)")


def clip_feature_net(weights_dir: str, image_shape: tuple[int, int, int]) -> ClipFeatures:
    """Load a Flax CLIP model (e.g. openai/clip-vit-base-patch32) from a local folder holding
    config.json and flax_model.msgpack. Nothing is downloaded and no pickled (PyTorch) weights are
    read: a folder without Flax weights is a clear error."""
    from pathlib import Path
    folder = Path(weights_dir)
    check_clip_folder(weights_dir)
    try:
        from transformers import FlaxCLIPModel
    except ImportError:
        raise ToyError("CLIP features need transformers with Flax support: uv pip install -e '.[clip]'") from None
    try:
        # the weights are read, not initialised at random first (which compiles every layer's initialiser)
        model, params = FlaxCLIPModel.from_pretrained(str(folder), local_files_only=True, _do_init=False)
    except Exception as e:        # transformers raises many types for a bad folder; one line for the user
        raise ToyError(f"--clip {weights_dir}: the Flax CLIP weights could not be loaded ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None
    return ClipFeatures(model, params, tuple(image_shape), name=f"CLIP image embeddings ({folder.name})")


# -- metrics --------------------------------------------------------------------------------------

def frechet_distance(real: np.ndarray, gen: np.ndarray) -> float:
    """‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½) between Gaussian fits of two feature sets."""
    from scipy import linalg
    mr, mg = real.mean(0), gen.mean(0)
    cr, cg = np.cov(real, rowvar=False), np.cov(gen, rowvar=False)
    covmean = np.real(linalg.sqrtm(cr @ cg))     # the matrix square root alone (SciPy drops `disp` in 1.18)
    return float(((mr - mg) ** 2).sum() + np.trace(cr + cg - 2 * covmean))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)                             # [n, n]
    return np.sort(d, axis=1)[:, k]                                               # k-th neighbour (0 is self)


def precision_recall(real: np.ndarray, gen: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (generated points inside the real k-NN manifold) and recall (real points
    inside the generated manifold), Kynkäänniemi et al. 2019."""
    r_real, r_gen = _knn_radii(real, k), _knn_radii(gen, k)
    d = np.linalg.norm(gen[:, None] - real[None], axis=-1)                        # [g, r]
    precision = float(np.mean((d <= r_real[None]).any(1)))
    recall = float(np.mean((d.T <= r_gen[None]).any(1)))
    return precision, recall


def class_separation(feats: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score of the features grouped by class, in [−1, 1]: higher is better separated."""
    from sklearn.metrics import silhouette_score
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(feats, labels))


def image_metrics(fnet: FeatureNet, real_feats: np.ndarray, gen: np.ndarray, target: np.ndarray) -> dict:
    """All metrics of one set of generations (flat images [n, d], target labels [n])."""
    feats = fnet.features(gen)
    if not np.all(np.isfinite(feats)):
        raise ToyError("generated images are not finite: lower the guidance scales or use more steps")
    precision, recall = precision_recall(real_feats, feats)
    return {"fd": frechet_distance(real_feats, feats), "accuracy": float(np.mean(fnet.predict(gen) == target)),
            "precision": precision, "recall": recall, "separation": class_separation(feats, target)}


def tsne(feature_sets: list[np.ndarray], seed: int = 0, perplexity: float = 30.0) -> list[np.ndarray]:
    """One joint t-SNE of several feature sets, split back: shared coordinates across panels."""
    from sklearn.manifold import TSNE
    x = np.concatenate(feature_sets)
    emb = TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    return np.split(emb, np.cumsum([len(f) for f in feature_sets])[:-1])
