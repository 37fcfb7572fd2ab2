"""The two framework sites of the example: the same network and loss, trained with Keras at
site-x and with PyTorch at site-y, each on its own records, each as an entente.Client."""

from __future__ import annotations

import time

import entente
import numpy as np
from common import HERE, own_split, read_idx


class TorchClient(entente.Client):
    """site-y: a plain PyTorch training loop."""

    def __init__(self, site: str, data: str | None = None) -> None:
        import torch
        from common import torch_model

        torch.set_num_threads(1)
        x, y = read_idx(HERE / "data" / site if data is None else data)
        self.x, self.y, self.x_test, self.y_test = own_split(x, y, site)
        self.torch = torch
        self.model = torch_model()

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.torch as et

        torch = self.torch
        et.set_params(self.model, params)
        opt = torch.optim.Adam(self.model.parameters(), lr=float(config["learning_rate"]))
        batch = int(config["batch_size"])
        rng = np.random.default_rng(int(config["seed"]))
        x, y = torch.from_numpy(self.x), torch.from_numpy(self.y)
        self.model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        for _ in range(int(config["local_epochs"])):
            order = torch.from_numpy(rng.permutation(len(self.y)))
            for i in range(0, len(order), batch):
                b = order[i : i + batch]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.model(x[b]), y[b])
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
                seen += len(b)
        metrics = {"loss": total / max(seen, 1), "fit_seconds": time.perf_counter() - started}
        return et.get_params(self.model), len(self.y), metrics

    def evaluate(self, params: entente.Params, config: entente.Config) -> tuple:
        return torch_evaluate(self.model, params, self.x_test, self.y_test)


def torch_evaluate(model: object, params: entente.Params, x: np.ndarray, y: np.ndarray) -> tuple:
    """Loss, examples and accuracy of ``params`` in a PyTorch module."""
    import entente.torch as et
    import torch

    et.set_params(model, params)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        accuracy = (logits.argmax(1).numpy() == y).mean()
    return float(loss), len(y), {"accuracy": float(accuracy)}


class KerasClient(entente.Client):
    """site-x: Keras' own model.fit."""

    def __init__(self, site: str, data: str | None = None) -> None:
        import keras
        from common import keras_model

        x, y = read_idx(HERE / "data" / site if data is None else data)
        self.x, self.y, self.x_test, self.y_test = own_split(x, y, site)
        self.keras = keras
        self.model = keras_model()

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.keras as ek

        keras = self.keras
        ek.set_params(self.model, params)
        keras.utils.set_random_seed(int(config["seed"]) % 2**31)
        # PyTorch's Adam epsilon, so that both frameworks take the same steps.
        self.model.compile(
            optimizer=keras.optimizers.Adam(float(config["learning_rate"]), epsilon=1e-8),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            # XLA brings its own LLVM, which clashes with PyTorch's in one process.
            jit_compile=False,
        )
        started = time.perf_counter()
        history = self.model.fit(
            self.x,
            self.y,
            batch_size=int(config["batch_size"]),
            epochs=int(config["local_epochs"]),
            shuffle=True,
            verbose=0,
        )
        metrics = {
            "loss": float(history.history["loss"][-1]),
            "fit_seconds": time.perf_counter() - started,
        }
        return ek.get_params(self.model), len(self.y), metrics

    def evaluate(self, params: entente.Params, config: entente.Config) -> tuple:
        return keras_evaluate(self.model, params, self.x_test, self.y_test)


def keras_evaluate(model: object, params: entente.Params, x: np.ndarray, y: np.ndarray) -> tuple:
    """Loss, examples and accuracy of ``params`` in a Keras model."""
    import entente.keras as ek
    import keras

    ek.set_params(model, params)
    logits = np.asarray(model.predict(x, batch_size=1000, verbose=0))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(loss), len(y), {"accuracy": float((logits.argmax(1) == y).mean())}
