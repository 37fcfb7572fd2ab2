"""Shared PyTorch workload for the entente-vs-Flower Fashion-MNIST simulation benchmark.

Both sides of the comparison (entente's Python simulation and `bench/flower_fmnist.py`) import
this module, so the data loading, the split, the model and the training loop are the same code:

- `load_fashion_mnist(dir)`: the IDX `.gz` files (Debian's `dataset-fashion-mnist`), pixels
  scaled to [0, 1] and flattened row-major to 784 floats; `raw_images_labels` keeps the
  pixels as bytes.
- `site_arrays(dir, split, site)`: one site's rows as uint8 pixels (the raw training images
  are read once per process, and a process forked after reading them shares them).
- `make_dirichlet_split(labels, ...)` / `write_split` / `load_split`: ten sites with label skew
  by Dirichlet(0.5), stored as a JSON list of index lists into the 60,000 training images (the
  format of entente's `split.json`).
- `site_train_test(indices, site, ...)`: each site keeps 10% of its examples as its own test
  split, never trained on.
- `TwoNN`: the 2NN of McMahan et al. (784-200-200-10, ReLU); `self.layers` is an
  `nn.ModuleList`, so the state_dict names are `layers.0.weight` ... `layers.2.bias`.
- `train_one_epoch(model, x, y, lr, batch, seed)`: plain SGD on cross-entropy, one epoch,
  shuffled by a numpy Generator seeded per (site, round) (see `shuffle_seed`).
- `evaluate(model, x, y) -> (loss, accuracy)`.

Both take uint8 pixels and scale each minibatch to float32 in [0, 1] as they go (`x / 255`,
the same float32 values `load_images_labels` gives), so no float copy of a whole site's data
is ever made; float32 input is used as it is.

    python bench/fmnist_torch.py --write-split bench/out/fmnist-split.json [--seed 1]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import itertools
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
NUM_SITES = 10
ALPHA = 0.5
SITE_TEST_FRACTION = 0.1
LR = 0.05
BATCH = 32
EVAL_BATCH = 1000


# --- data ---------------------------------------------------------------------------------


def read_idx(path: str) -> np.ndarray:
    """Reads an unsigned-byte IDX file (gzip or plain) into a numpy uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(directory: str, name: str) -> str:
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{name}(.gz) not found in {directory}")


def raw_images_labels(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """`prefix` is "train" or "t10k". Returns x uint8 [n, 784] and y int64 [n]."""
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1] (x / 255); float input is only cast to float32."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    return np.asarray(pixels, dtype=np.float32)


def load_images_labels(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """`prefix` is "train" or "t10k". Returns x float32 [n, 784] in [0, 1] and y int64 [n]."""
    images, labels = raw_images_labels(directory, prefix)
    return scale(images), labels


def load_fashion_mnist(
    directory: str = FASHION_MNIST,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 60,000 training and 10,000 t10k test examples."""
    x_train, y_train = load_images_labels(directory, "train")
    x_test, y_test = load_images_labels(directory, "t10k")
    return x_train, y_train, x_test, y_test


# --- split --------------------------------------------------------------------------------


def make_dirichlet_split(
    labels: np.ndarray,
    num_sites: int = NUM_SITES,
    alpha: float = ALPHA,
    seed: int = 1,
    min_per_site: int = 10,
    max_attempts: int = 10,
) -> list[list[int]]:
    """Label skew (Hsu, Qi, Brown 2019), the same scheme as entente's `partition = "dirichlet"`.

    For each class, draws site proportions from Dirichlet(alpha) and splits the class's
    shuffled examples accordingly; retries until every site has `min_per_site` examples.
    Returns one sorted index list per site. Not bit-identical to entente's Rust split (another
    RNG): to compare the two, pass one split file to both.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    smallest = 0
    for _ in range(max_attempts):
        sites: list[list[int]] = [[] for _ in range(num_sites)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet([alpha] * num_sites)
            cuts = np.rint(np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            cuts = np.clip(np.maximum.accumulate(cuts), 0, len(idx))
            for site, part in zip(sites, np.split(idx, cuts), strict=False):
                site.extend(int(i) for i in part)
        smallest = min(len(s) for s in sites)
        if smallest >= min_per_site:
            return [sorted(s) for s in sites]
    raise RuntimeError(
        f"no Dirichlet({alpha}) split over {num_sites} sites gave every site {min_per_site} "
        f"examples in {max_attempts} attempts (best smallest site: {smallest})"
    )


def write_split(path: str, split: Sequence[Sequence[int]]) -> None:
    """Writes a split as a JSON list of index lists (entente's `split.json` format)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump([[int(i) for i in site] for site in split], f)
        f.write("\n")


def load_split(path: str, num_train: int | None = None) -> list[list[int]]:
    """Reads a JSON list of index lists, one per site, into the training images."""
    with open(path) as f:
        split = json.load(f)
    if not isinstance(split, list) or not all(isinstance(s, list) for s in split):
        raise ValueError(f"{path}: expected a JSON list of index lists")
    split = [[int(i) for i in site] for site in split]
    seen: set[int] = set()
    for s, site in enumerate(split):
        for i in site:
            if i < 0 or (num_train is not None and i >= num_train):
                raise ValueError(f"{path}: site {s} has index {i}, outside 0..{num_train}")
            if i in seen:
                raise ValueError(f"{path}: index {i} appears in more than one site")
            seen.add(i)
    return split


def ensure_split(
    path: str | None, labels: np.ndarray, default_path: str, seed: int = 1
) -> tuple[list[list[int]], str]:
    """Loads `path` if given, else makes a Dirichlet(0.5) split and writes it to `default_path`."""
    if path:
        return load_split(path, num_train=len(labels)), path
    split = make_dirichlet_split(labels, seed=seed)
    write_split(default_path, split)
    return split, default_path


@functools.lru_cache(maxsize=4)
def raw_train(directory: str = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images (uint8 [60000, 784], 47 MB) and labels (int64), read once
    per process. A process forked after this call shares the images with its parent."""
    return raw_images_labels(directory, "train")


def train_labels(directory: str = FASHION_MNIST) -> np.ndarray:
    """The 60,000 training labels (int64), read without the images."""
    return read_idx(_find(directory, "train-labels-idx1-ubyte")).astype(np.int64)


@functools.lru_cache(maxsize=4)
def _cached_split(path: str, num_train: int) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(s, np.int64) for s in load_split(path, num_train))


@functools.lru_cache(maxsize=64)
def _site_indices(
    split_path: str, num_train: int, site: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    return site_train_test(_cached_split(split_path, num_train)[site], site, fraction, seed)


def site_arrays(
    directory: str,
    split_path: str,
    site: int,
    seed: int = 1,
    fraction: float = SITE_TEST_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of one site (0-based): uint8 pixels [n, 784] (the
    training functions scale them per minibatch) and int64 labels. The raw training images,
    the split and the site's indices are read once per process and cached; each call copies
    only the site's own rows (a few MB)."""
    images, labels = raw_train(directory)
    train_idx, test_idx = _site_indices(split_path, len(labels), site, fraction, seed)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def _round_half_away(x: float) -> int:
    """Rust's f64::round (half away from zero), not Python's banker's rounding."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def site_train_test(
    indices: Sequence[int],
    site: int,
    fraction: float = SITE_TEST_FRACTION,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of one site: shuffles its indices with a Generator seeded by
    (seed, site) and keeps the first round(fraction * n) (at most n - 1) as its test split."""
    own = np.random.default_rng([seed, 200 + site]).permutation(np.asarray(indices, np.int64))
    n_test = min(_round_half_away(len(own) * fraction), max(len(own) - 1, 0))
    return own[n_test:], own[:n_test]


# --- model and training -------------------------------------------------------------------


class TwoNN(nn.Module):
    """784-200-200-10 MLP with ReLU; state_dict names layers.{0,1,2}.{weight,bias}."""

    def __init__(self, sizes: Sequence[int] = (784, 200, 200, 10)):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in itertools.pairwise(sizes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return x


def initial_model(seed: int = 1) -> TwoNN:
    """The 2NN with PyTorch's default initialisation, drawn from torch.manual_seed(seed)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TwoNN()
    torch.random.set_rng_state(gen_state)
    return model


def shuffle_seed(seed: int, site: int, rnd: int) -> int:
    """The shuffling seed of `site` (0-based) in round `rnd` (1-based) of a run seeded `seed`:
    a 32-bit integer, so it travels in any config."""
    return int(np.random.SeedSequence([seed, site, rnd]).generate_state(1, np.uint32)[0])


def _batch(x: np.ndarray, y: np.ndarray, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `rows` (an index array or a slice) of (x, y) as tensors: pixels scaled to float32."""
    return torch.from_numpy(scale(x[rows])), torch.from_numpy(np.asarray(y[rows], np.int64))


def train_one_epoch(
    model: nn.Module, x, y, lr: float = LR, batch: int = BATCH, seed: int = 0
) -> float:
    """One epoch of plain SGD (no momentum, no weight decay) on cross-entropy over (x, y) in
    minibatches of `batch`, the order shuffled by np.random.default_rng(seed). `x` is uint8
    pixels (each minibatch scaled to [0, 1] as it is drawn) or floats. The last batch may be
    smaller. Returns the mean minibatch loss."""
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    steps = 0
    for start in range(0, n, batch):
        xb, yb = _batch(x, y, order[start : start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x, y) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on (x, y): uint8 pixels (scaled per batch
    of EVAL_BATCH) or floats."""
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum = 0.0
    correct = 0
    for start in range(0, n, EVAL_BATCH):
        xb, target = _batch(x, y, slice(start, start + EVAL_BATCH))
        logits = model(xb)
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == target).sum().item())
    return loss_sum / n, correct / n


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The state_dict's arrays, in state_dict order (layers.0.weight, layers.0.bias, ...)."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"expected {len(keys)} arrays, got {len(weights)}")
    state = {
        k: torch.from_numpy(np.asarray(w, dtype=np.float32))
        for k, w in zip(keys, weights, strict=False)
    }
    model.load_state_dict(state, strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=FASHION_MNIST)
    parser.add_argument("--write-split", metavar="PATH", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sites", type=int, default=NUM_SITES)
    parser.add_argument("--alpha", type=float, default=ALPHA)
    args = parser.parse_args()
    labels = train_labels(args.data)
    split = make_dirichlet_split(labels, args.sites, args.alpha, args.seed)
    write_split(args.write_split, split)
    sizes = [len(s) for s in split]
    print(json.dumps({"split": args.write_split, "sites": len(split), "sizes": sizes}))


if __name__ == "__main__":
    main()
