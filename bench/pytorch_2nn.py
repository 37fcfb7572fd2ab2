#!/usr/bin/env python3
"""PyTorch reference for entente's training bench (crates/entente-learn/benches/training.rs).

Same workload: the 2NN (784-200-200-10, ReLU, PyTorch default init), plain SGD lr 0.05 on
cross-entropy, batch 32, one epoch over the first 6,400 Fashion-MNIST training images (pixels
scaled to [0, 1]), shuffled each epoch. Like entente's trainer, every repetition builds the
model from the same initial parameters, reads each minibatch loss back as a Python float, and
takes one optimizer step per minibatch. Prints the median samples/s over the timed repetitions
(after untimed warm-up epochs).

    python bench/pytorch_2nn.py [--threads N] [--reps 10] [--warmup 2]
"""

import argparse
import gzip
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
EXAMPLES = 6400
BATCH = 32
LR = 0.05


def read_idx(path):
    """Reads an IDX file (gzip or plain) into a numpy array of unsigned bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def find(directory, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{name}(.gz) not found in {directory}")


def load(directory, n):
    images = read_idx(find(directory, "train-images-idx3-ubyte"))[:n]
    labels = read_idx(find(directory, "train-labels-idx1-ubyte"))[:n]
    x = torch.from_numpy(images.reshape(n, -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def make_model():
    return nn.Sequential(
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    )


def epoch(initial_state, x, y, generator):
    """One local-training call: fresh model from `initial_state`, one epoch of SGD."""
    model = make_model()
    model.load_state_dict(initial_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(x.shape[0], generator=generator)
    total = 0.0
    for start in range(0, x.shape[0], BATCH):
        idx = order[start : start + BATCH]
        xb, yb = x[idx], y[idx]
        loss = loss_fn(model(xb), yb)
        value = loss.item()
        if value != value:
            raise RuntimeError("training diverged")
        total += value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: all cores, %(default)s)")
    parser.add_argument("--reps", type=int, default=10, help="timed epochs (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs first (default 2)")
    parser.add_argument("--data", default=FASHION_MNIST, help="directory of the IDX files")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    x, y = load(args.data, EXAMPLES)
    initial_state = {k: v.clone() for k, v in make_model().state_dict().items()}
    generator = torch.Generator().manual_seed(1)

    for _ in range(args.warmup):
        epoch(initial_state, x, y, generator)
    rates = []
    for _ in range(args.reps):
        start = time.perf_counter()
        epoch(initial_state, x, y, generator)
        rates.append(EXAMPLES / (time.perf_counter() - start))

    print(
        f"pytorch {torch.__version__} 2NN b{BATCH} threads={torch.get_num_threads()}: "
        f"median {statistics.median(rates):.0f} samples/s "
        f"(min {min(rates):.0f}, max {max(rates):.0f}, {args.reps} reps of {EXAMPLES})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
