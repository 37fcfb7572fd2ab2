"""Loads a final model.safetensors into a PyTorch module and into a Keras model and prints
the test accuracy of each on the 10,000 Fashion-MNIST test images (they agree).

    python check_model.py runs/federated/model.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

from clients import keras_evaluate, torch_evaluate
from common import FASHION_MNIST, keras_model, read_idx, torch_model
from safetensors.numpy import load_file


def accuracies(model: Path) -> tuple[float, float]:
    """Test accuracy of the model file in PyTorch and in Keras."""
    params = load_file(str(model))
    x, y = read_idx(FASHION_MNIST, "test")
    _, _, in_torch = torch_evaluate(torch_model(), params, x, y)
    _, _, in_keras = keras_evaluate(keras_model(), params, x, y)
    return in_torch["accuracy"], in_keras["accuracy"]


if __name__ == "__main__":
    torch_acc, keras_acc = accuracies(Path(sys.argv[1]))
    print(f"PyTorch: {torch_acc:.4f}  Keras: {keras_acc:.4f}")
