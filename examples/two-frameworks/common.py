"""What the three sites of the example share: the network (in PyTorch and in Keras, with the
same canonical tensor names), reading IDX files, and each site's own test split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SITES = ("site-x", "site-y", "site-z")
#: Hidden widths of the network every site trains: 784-512-256-10 with ReLU.
HIDDEN = (512, 256)
SEED = 1


def _open(path: Path) -> bytes:
    if not path.exists() and path.with_suffix(path.suffix + ".gz").exists():
        path = path.with_suffix(path.suffix + ".gz")
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 in [0, 1], flattened row-major to 784, and labels as int64."""
    prefix = "train" if split == "train" else "t10k"
    images = _open(folder / f"{prefix}-images-idx3-ubyte")
    labels = _open(folder / f"{prefix}-labels-idx1-ubyte")
    magic, n, rows, cols = struct.unpack(">IIII", images[:16])
    if magic != 0x803:
        raise ValueError(f"{folder}: not an IDX image file")
    x = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(n, rows * cols)
    y = np.frombuffer(labels, dtype=np.uint8, offset=8)
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes uint8 images [n, 28, 28] and labels [n] as gzip IDX training files."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    head = struct.pack(">IIII", 0x803, n, rows, cols)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + images.tobytes()))
    head = struct.pack(">II", 0x801, n)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(head + labels.tobytes()))


def own_split(
    x: np.ndarray, y: np.ndarray, site: str, fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A site's training examples and its own test split (seeded by the site's name)."""
    rng = np.random.default_rng([SEED, SITES.index(site)])
    order = rng.permutation(len(y))
    n_test = round(len(y) * fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def torch_model() -> object:
    """The network in PyTorch; its state_dict names are the canonical ones (layers.0.weight...)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (784, *HIDDEN, 10)
            self.layers = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i + 1 < len(self.layers):
                    x = torch.relu(x)
            return x

    return Net()


def keras_model() -> object:
    """The same network in Keras; entente.keras names its Dense layers layers.0, 1, 2."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(784,))]
        + [keras.layers.Dense(w, activation="relu") for w in HIDDEN]
        + [keras.layers.Dense(10)]
    )
    return model
