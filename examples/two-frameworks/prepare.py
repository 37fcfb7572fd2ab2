"""Gives each of the three sites its own records and writes the initial model.

Splits Fashion-MNIST's 60,000 training images among site-x, site-y and site-z with label
skew (per class, shares drawn from Dirichlet(0.5), seeded) and writes each share as that
site's own IDX files under data/SITE/. In a real federation each institution already has
its records; this stands in for that. Also writes init.safetensors, the network's initial
tensors (PyTorch's default initialisation, seeded), which the manifest names.

    python prepare.py [--fashion-mnist DIR] [--limit N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import FASHION_MNIST, HERE, SEED, SITES, read_idx, torch_model, write_idx


def dirichlet_split(labels: np.ndarray, sites: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, the examples are dealt to the sites in Dirichlet(alpha) proportions."""
    rng = np.random.default_rng(seed)
    shares: list[list[int]] = [[] for _ in range(sites)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * sites))[:-1] * len(idx)).astype(int)
        for site, part in enumerate(np.split(idx, cuts)):
            shares[site].extend(part.tolist())
    return [np.sort(np.array(s, dtype=np.int64)) for s in shares]


def prepared(out: Path = HERE) -> bool:
    """Whether every site's records and the initial model are in place."""
    files = [out / "init.safetensors"] + [out / "data" / s for s in SITES]
    return all(f.exists() for f in files)


def prepare(
    fashion_mnist: Path = FASHION_MNIST, limit: int | None = None, out: Path = HERE
) -> None:
    """Writes data/SITE/ for every site and init.safetensors under `out`."""
    x, y = read_idx(fashion_mnist, "train")
    if limit:
        x, y = x[:limit], y[:limit]
    images = np.round(x * 255).astype(np.uint8).reshape(-1, 28, 28)
    for site, idx in zip(SITES, dirichlet_split(y, len(SITES), 0.5, SEED), strict=False):
        write_idx(out / "data" / site, images[idx], y[idx].astype(np.uint8))
        counts = np.bincount(y[idx], minlength=10)
        print(f"{site}: {len(idx)} records, per class {counts.tolist()}")

    import entente.torch
    import torch

    torch.manual_seed(SEED)
    entente.save_params(entente.torch.get_params(torch_model()), out / "init.safetensors")
    print(f"initial model: {out / 'init.safetensors'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    prepare(args.fashion_mnist, args.limit, args.out)


if __name__ == "__main__":
    main()
