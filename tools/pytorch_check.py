"""Loads an entente model.safetensors into the equivalent PyTorch MLP and evaluates it on the
Fashion-MNIST test set, to show that saved models load in PyTorch unchanged.

    python tools/pytorch_check.py runs/NAME/model.safetensors [--data /usr/share/datasets/fashion-mnist]

Needs torch, safetensors and numpy. Prints the tensor names and shapes and the test accuracy,
which should equal the run's final `federated_accuracy` in summary.json.
"""

import argparse
import gzip
import pathlib

import numpy as np
import torch
from safetensors.torch import load_file


def read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Mlp(torch.nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()

    state = load_file(args.model)
    for name, tensor in state.items():
        print(f"{name}: {list(tensor.shape)} {tensor.dtype}")
    n_layers = len(state) // 2
    widths = [state["layers.0.weight"].shape[1]] + [
        state[f"layers.{k}.weight"].shape[0] for k in range(n_layers)
    ]
    model = Mlp(widths)
    model.load_state_dict(state, strict=True)

    data = pathlib.Path(args.data)
    images = read_idx(data / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    labels = read_idx(data / "t10k-labels-idx1-ubyte.gz")
    with torch.no_grad():
        logits = model(torch.tensor(images, dtype=torch.float32))
    accuracy = (logits.argmax(1).numpy() == labels).mean()
    print(f"PyTorch {torch.__version__}: MLP {'-'.join(map(str, widths))}, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
