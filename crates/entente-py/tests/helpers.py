"""What the tests share: the digits federation on disk and small clients for every framework.

The federation is three sites (``site-a``, ``site-b``, ``site-c``), each with its own CSV file
of the UCI digits (pixels already scaled to [0, 1], so the manifest says ``standardize =
false`` and entente's own trainer reads the same values the Python clients do), and an
external MLP 64-32-10 as the initial model. The deployment tests import this module from
their subprocesses (``sys.path.insert(0, TESTS)``), so it only imports torch, keras and flwr
inside the client that needs them.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np

import entente

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]
DIGITS = REPO / "data" / "uci-digits.csv.gz"
FEDERATION = "digits-test"
SITES = ("site-a", "site-b", "site-c")
#: Rows of the digits table each site holds; the rest is the coordinator's test table.
SITE_ROWS = 560
HIDDEN = 32
FEATURES = 64
CLASSES = 10
SEED = 7
#: Share of a site's rows its Python client keeps as its own test split.
OWN_TEST = 0.1

#: The init model's tensors, in order.
LAYOUT = {
    "layers.0.weight": (HIDDEN, FEATURES),
    "layers.0.bias": (HIDDEN,),
    "layers.1.weight": (CLASSES, HIDDEN),
    "layers.1.bias": (CLASSES,),
}


def entente_bin() -> Path | None:
    """The `entente` CLI: $ENTENTE_BIN, else the shared release build, else the repo's."""
    candidates = [
        os.environ.get("ENTENTE_BIN"),
        "/root/.cache/entente-target/release/entente",
        str(REPO / "target" / "release" / "entente"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


# --- data and initial model -------------------------------------------------------------


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits: pixels as float32 in [0, 1] and labels as int64."""
    table = np.loadtxt(gzip.open(DIGITS, "rt"), delimiter=",", dtype=np.float64)
    return (table[:, :FEATURES] / 16.0).astype(np.float32), table[:, FEATURES].astype(np.int64)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """A headerless table: the pixels as floats, then the label."""
    rows = [
        ",".join(f"{v:.6g}" for v in row) + f",{label}" for row, label in zip(x, y, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    return table[:, :FEATURES].astype(np.float32), table[:, FEATURES].astype(np.int64)


def init_params(seed: int = SEED) -> dict[str, np.ndarray]:
    """The initial MLP: uniform in +-1/sqrt(fan_in) (PyTorch's Linear default), seeded."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in LAYOUT.items():
        fan_in = FEATURES if name.startswith("layers.0") else HIDDEN
        bound = 1.0 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return params


def write_data(folder: Path) -> None:
    """Each site's own CSV (seeded split), the coordinator's test CSV and init.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = read_digits()
    order = np.random.default_rng(SEED).permutation(len(y))
    for i, site in enumerate(SITES):
        rows = order[i * SITE_ROWS : (i + 1) * SITE_ROWS]
        write_csv(folder / f"{site}.csv", x[rows], y[rows])
    rest = order[len(SITES) * SITE_ROWS :]
    write_csv(folder / "central.csv", x[rest], y[rest])
    entente.save_params(init_params(), folder / "init.safetensors")


def manifest_text(
    name: str,
    *,
    rounds: int = 3,
    min_sites: int = 3,
    secure: bool = False,
    learning_rate: float = 0.01,
    optimizer: str = "adam",
    deadline_secs: int = 120,
    strategy: str = 'kind = "fedavg"',
    extra: str = "",
) -> str:
    """The federation's manifest (paths relative to it); ``strategy`` is the body of its
    ``[strategy]`` table, ``extra`` more tables (``[privacy]``, ...)."""
    sites = "".join(f'\n[[sites]]\nname = "{s}"\ndata = "{s}.csv"\n' for s in SITES)
    secure_table = "\n[secure_aggregation]\nthreshold = 0.67\nclip = 1.0\n" if secure else ""
    return f"""[federation]
name = "{name}"
seed = {SEED}

[data]
format = "csv"
path = "central.csv"
standardize = false
site_test_fraction = 0.1
features = {FEATURES}
classes = {CLASSES}
{sites}
[model]
kind = "external"
init = "init.safetensors"

[training]
rounds = {rounds}
local_epochs = 1
batch_size = 32
learning_rate = {learning_rate}
optimizer = "{optimizer}"

[strategy]
{strategy}
max_examples = 100000

[selection]
min_sites = {min_sites}
deadline_secs = {deadline_secs}
{secure_table}{extra}"""


def write_federation(folder: Path, name: str = FEDERATION, **terms: object) -> Path:
    """Data, init model and manifest in ``folder``; returns the manifest's path."""
    write_data(folder)
    manifest = folder / "federation.toml"
    manifest.write_text(manifest_text(name, **terms))
    return manifest


def own_split(
    x: np.ndarray, y: np.ndarray, site: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A site's training rows and its own test split (seeded by the site)."""
    order = np.random.default_rng([SEED, SITES.index(site)]).permutation(len(y))
    n_test = round(len(y) * OWN_TEST)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def site_data(folder: Path, site: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = read_csv(Path(folder) / f"{site}.csv")
    return own_split(x, y, site)


def accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the MLP ``params`` on ``x``, in numpy."""
    hidden = np.maximum(x @ params["layers.0.weight"].T + params["layers.0.bias"], 0.0)
    logits = hidden @ params["layers.1.weight"].T + params["layers.1.bias"]
    return float((logits.argmax(1) == y).mean())


# --- the networks -----------------------------------------------------------------------


def torch_net() -> object:
    """The MLP in PyTorch; its state-dict names are the canonical ones."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(FEATURES, HIDDEN), nn.Linear(HIDDEN, CLASSES)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers[1](torch.relu(self.layers[0](x)))

    return Net()


def keras_net() -> object:
    """The same MLP in Keras (entente.keras names its Dense layers layers.0 and layers.1)."""
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


# --- clients ----------------------------------------------------------------------------


class TorchClient(entente.Client):
    """A plain PyTorch loop on the site's own CSV file."""

    def __init__(self, folder: Path, site: str) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.site = site
        self.x, self.y, self.x_test, self.y_test = site_data(folder, site)
        self.model = torch_net()
        self.rounds: list[int] = []

    def train(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.torch as et

        torch = self.torch
        et.set_params(self.model, params)
        lr = float(config["learning_rate"])
        if config["optimizer"] == "adam":
            opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        else:
            opt = torch.optim.SGD(
                self.model.parameters(), lr=lr, momentum=float(config["momentum"])
            )
        batch = int(config["batch_size"])
        rng = np.random.default_rng([int(config["seed"]), int(config["round"])])
        x, y = torch.from_numpy(self.x), torch.from_numpy(self.y)
        self.model.train()
        total, seen = 0.0, 0
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
        return et.get_params(self.model), len(self.y), {"loss": total / max(seen, 1)}

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        self.rounds.append(int(config["round"]))
        return self.train(params, config)

    def evaluate(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.torch as et

        torch = self.torch
        et.set_params(self.model, params)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.from_numpy(self.x_test))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(self.y_test))
        acc = float((logits.argmax(1).numpy() == self.y_test).mean())
        return float(loss), len(self.y_test), {"accuracy": acc}


class KerasClient(entente.Client):
    """Keras' own model.fit on the site's own CSV file, through entente.keras."""

    def __init__(self, folder: Path, site: str) -> None:
        import keras

        self.keras = keras
        self.site = site
        self.x, self.y, self.x_test, self.y_test = site_data(folder, site)
        keras.utils.set_random_seed(SEED)
        self.model = keras_net()

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.keras as ek

        keras = self.keras
        ek.set_params(self.model, params)
        keras.utils.set_random_seed(int(config["seed"]) % 2**31)
        lr = float(config["learning_rate"])
        optimizer = (
            keras.optimizers.Adam(lr, epsilon=1e-8)
            if config["optimizer"] == "adam"
            else keras.optimizers.SGD(lr)
        )
        self.model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = self.model.fit(
            self.x,
            self.y,
            batch_size=int(config["batch_size"]),
            epochs=int(config["local_epochs"]),
            shuffle=True,
            verbose=0,
        )
        return ek.get_params(self.model), len(self.y), {"loss": history.history["loss"][-1]}

    def evaluate(self, params: entente.Params, config: entente.Config) -> tuple:
        import entente.keras as ek

        keras = self.keras
        ek.set_params(self.model, params)
        logits = np.asarray(self.model.predict(self.x_test, batch_size=1000, verbose=0))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(self.y_test, logits)
        acc = float((logits.argmax(1) == self.y_test).mean())
        return float(loss), len(self.y_test), {"accuracy": acc}


class RaisingClient(TorchClient):
    """Raises ValueError in the round ``fail_round``; trains normally otherwise."""

    def __init__(self, folder: Path, site: str, fail_round: int = 2) -> None:
        super().__init__(folder, site)
        self.fail_round = fail_round

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        self.rounds.append(int(config["round"]))
        if int(config["round"]) == self.fail_round:
            raise ValueError(f"boom at round {self.fail_round}")
        return self.train(params, config)


class BadReturnClient(TorchClient):
    """Trains, then spoils what fit returns with ``spoil(params) -> params``."""

    def __init__(self, folder: Path, site: str, spoil: object) -> None:
        super().__init__(folder, site)
        self.spoil = spoil

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        new, examples, metrics = super().fit(params, config)
        return self.spoil(new), examples, metrics


class SlowClient(TorchClient):
    """Sleeps ``delay`` seconds in every fit (in Python, holding no lock), then trains."""

    def __init__(self, folder: Path, site: str, delay: float) -> None:
        super().__init__(folder, site)
        self.delay = delay

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        time.sleep(self.delay)
        return super().fit(params, config)


class BlockingClient(entente.Client):
    """Prints ``MARKER`` (flushed) as soon as fit starts, then sleeps ``delay`` seconds."""

    MARKER = "inside fit"

    def __init__(self, delay: float = 30.0) -> None:
        self.delay = delay

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        print(self.MARKER, flush=True)
        time.sleep(self.delay)
        return params, 1, {"loss": 0.0}

    def evaluate(self, params: entente.Params, config: entente.Config) -> tuple:
        return 0.0, 1, {"accuracy": 0.0}


def make_client(kind: str, folder: Path, site: str) -> object:
    """The client ``kind`` names, for site ``site`` of the federation in ``folder``:
    ``torch``, ``keras``, ``flower``, ``slow`` (fit sleeps 2.5 s first) or ``blocking``."""
    if kind == "torch":
        return TorchClient(folder, site)
    if kind == "keras":
        return KerasClient(folder, site)
    if kind == "flower":
        return flower_client(folder, site)
    if kind == "slow":
        return SlowClient(folder, site, delay=2.5)
    if kind == "blocking":
        return BlockingClient()
    raise ValueError(f"no client kind {kind!r}")


def flower_client(folder: Path, site: str) -> object:
    """A Flower ``NumPyClient``, written as for Flower: lists of arrays in and out."""
    import flwr
    import torch

    torch.set_num_threads(1)

    class FlowerTorchClient(flwr.client.NumPyClient):
        def __init__(self) -> None:
            self.model = torch_net()
            self.x, self.y, self.x_test, self.y_test = site_data(folder, site)
            self.calls: list[str] = []

        def get_parameters(self, config: dict) -> list[np.ndarray]:
            return [v.detach().cpu().numpy() for v in self.model.state_dict().values()]

        def set_parameters(self, parameters: list[np.ndarray]) -> None:
            keys = list(self.model.state_dict().keys())
            state = {k: torch.tensor(v) for k, v in zip(keys, parameters, strict=True)}
            self.model.load_state_dict(state, strict=True)

        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple:
            self.calls.append("fit")
            self.set_parameters(parameters)
            opt = torch.optim.Adam(self.model.parameters(), lr=float(config["learning_rate"]))
            x, y = torch.from_numpy(self.x), torch.from_numpy(self.y)
            batch = int(config["batch_size"])
            seed = (int(config["seed"]) + int(config["round"])) % 2**63
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(y), generator=generator)
            self.model.train()
            for i in range(0, len(order), batch):
                b = order[i : i + batch]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.model(x[b]), y[b])
                loss.backward()
                opt.step()
            return self.get_parameters(config={}), len(y), {"loss": loss.item()}

        def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple:
            self.calls.append("evaluate")
            self.set_parameters(parameters)
            self.model.eval()
            with torch.no_grad():
                logits = self.model(torch.from_numpy(self.x_test))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(self.y_test))
            acc = float((logits.argmax(1).numpy() == self.y_test).mean())
            return float(loss), len(self.y_test), {"accuracy": acc}

    return FlowerTorchClient()


class CountingClient(TorchClient):
    """A client with state across rounds: its fit reports as its loss how many fits this one
    object has answered (1 in round 1, 2 in round 2, ...), so a run shows whether a site's
    calls all reached the same client."""

    def __init__(self, folder: Path, site: str) -> None:
        super().__init__(folder, site)
        self.fits = 0

    def fit(self, params: entente.Params, config: entente.Config) -> tuple:
        self.fits += 1
        trained, examples, _ = self.train(params, config)
        return trained, examples, {"loss": float(self.fits)}
