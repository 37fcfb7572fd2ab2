"""The two-framework federation in one process, and what joining bought each site.

Runs federation.toml with entente.simulate: site-x's KerasClient, site-y's TorchClient and
entente's own trainer at site-z. Then trains each site alone (a one-site federation with the
same settings and as many epochs) and prints, for every site, the accuracy on the 10,000
Fashion-MNIST test images of its model alone and of the federated model, and the federated
model's accuracy in PyTorch and in Keras.

    python simulate.py [--rounds N] [--no-baselines]   (runs prepare.py first if needed)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tomllib
from pathlib import Path

import entente
from check_model import accuracies
from clients import KerasClient, TorchClient
from common import FASHION_MNIST, HERE, SITES
from prepare import prepare, prepared

MANIFEST = HERE / "federation.toml"


def client_fn(site: str) -> entente.Client | None:
    """site-x trains with Keras, site-y with PyTorch, site-z with entente's own trainer."""
    return {"site-x": KerasClient, "site-y": TorchClient}.get(site, lambda _: None)(site)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def alone_manifest(site: str) -> str:
    """federation.toml with `site` as its only member: the same model, data schema and
    training, no secure aggregation (it needs three sites), paths made absolute."""
    terms = tomllib.loads(MANIFEST.read_text())
    terms["federation"]["name"] = f"alone-{site}"
    terms.pop("secure_aggregation", None)
    terms["selection"]["min_sites"] = 1
    terms["model"]["init"] = str(HERE / terms["model"]["init"])
    (entry,) = [s for s in terms.pop("sites") if s["name"] == site]
    entry["data"] = str(HERE / entry["data"])
    lines = []
    for table, keys in terms.items():
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in keys.items())
    lines.append("[[sites]]")
    lines.extend(f"{k} = {_toml(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


def alone(site: str, rounds: int, out: Path) -> float:
    """Test accuracy of the model `site` trains by itself for as many epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "alone.toml"
        manifest.write_text(alone_manifest(site))
        result = entente.simulate(
            manifest,
            client_fn,
            out=out,
            rounds=rounds,
            quiet=True,
            eval_data=FASHION_MNIST,
            processes=1,
        )
    return float(result.summary["federated_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "runs")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    if not prepared():
        # In a real federation each institution already holds its records.
        prepare()

    # Each site's client in a worker process of its own: the sites train at once, and
    # TensorFlow and PyTorch never share a process (each brings its own LLVM, see README).
    result = entente.simulate(
        MANIFEST,
        client_fn,
        out=args.out / "federated",
        rounds=args.rounds,
        eval_data=FASHION_MNIST,
        processes=len(SITES),
    )
    rounds = int(result.summary["rounds"])
    report = {
        "federated_accuracy": result.summary["federated_accuracy"],
        "local_only_accuracy": {},
    }
    if not args.no_baselines:
        for site in SITES:
            report["local_only_accuracy"][site] = alone(site, rounds, args.out / f"alone-{site}")
    # Last: this loads PyTorch and TensorFlow here, after every worker process has ended.
    in_torch, in_keras = accuracies(result.model_path)
    report["federated_accuracy_pytorch"] = in_torch
    report["federated_accuracy_keras"] = in_keras
    print("\nwhat joining bought (accuracy on the 10,000 Fashion-MNIST test images):")
    print(f"{'site':<8} {'alone':>8} {'federated':>10}")
    for site, acc in report["local_only_accuracy"].items():
        print(f"{site:<8} {acc:>7.2%} {report['federated_accuracy']:>10.2%}")
    print(f"final model in PyTorch: {in_torch:.2%}, in Keras: {in_keras:.2%}")
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
