#!/usr/bin/env python3
"""Flower side of the entente-vs-Flower simulation benchmark (Fashion-MNIST, ten sites).

Runs Flower 1.42's `flwr.simulation.run_simulation` (Ray backend) with a ServerApp holding a
legacy `FedAvg` (fraction_fit 1, every site every round, weighted by examples, server-side
evaluation of the global model on the 10,000 t10k images through `evaluate_fn`) and a
ClientApp whose `NumPyClient` trains with the shared code in `bench/fmnist_torch.py`: the 2NN
784-200-200-10, SGD lr 0.05, batch 32, one local epoch, one torch thread per client, 10% of
each site's examples kept out of training as its own test split.

The split is a JSON list of index lists (`--split`, for example entente's `split.json`); without
one, a Dirichlet(0.5) split is made with `--seed` and written to `--write-split`.

Prints a JSON object on the last line of stdout (and to `--out`): `wall_s` (from before the
imports of torch, Flower and Ray to the return of run_simulation; `import_s` of it is the
imports), the rounds' summed wall seconds, the final global test accuracy, and per round: its
wall time (from the strategy's configure_fit to the end of the round's evaluation; round 1
also waits for Ray to start its actors), the slowest client's own fit time (reported in its
fit metrics; `slowest_train_s` is train_one_epoch alone) and the difference, the overhead.
With `--cpus` CPUs and one CPU per client, Ray runs that many clients at once, so on a small
machine the overhead also holds the clients' queueing; `packed_overhead_s` is the round time
less the clients' summed fit time divided by `--cpus` (what a perfect packing would take).
Aggregation sums the results in arrival order, so the last digits can differ between runs.

    python bench/pss.py --out bench/out/flower-pss.json -- \\
        python bench/flower_fmnist.py --split bench/out/fmnist-split.json --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

T_START = time.perf_counter()  # before torch, Flower and Ray are imported
HERE = os.path.dirname(os.path.abspath(__file__))
# Before Flower or Ray is imported: no telemetry (no network here), and the Ray workers (which
# inherit this environment) can import `fmnist_torch` by name.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, HERE)

import fmnist_torch as ft
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation


class SiteClient(NumPyClient):
    """One site: trains the shared 2NN on its own 90% and evaluates on its own 10%."""

    def __init__(self, site: int, data_dir: str, split_path: str, seed: int):
        self.site = site
        self.data_dir = data_dir
        self.split_path = split_path
        self.seed = seed
        self.model = ft.TwoNN()

    def get_parameters(self, config):
        return ft.get_weights(self.model)

    def fit(self, parameters, config):
        start = time.perf_counter()
        torch.set_num_threads(1)
        x, y, _, _ = ft.site_arrays(self.data_dir, self.split_path, self.site, self.seed)
        ft.set_weights(self.model, parameters)
        rnd = int(config["server_round"])
        t_train = time.perf_counter()
        loss = ft.train_one_epoch(
            self.model,
            x,
            y,
            ft.LR,
            ft.BATCH,
            ft.shuffle_seed(self.seed, self.site, rnd),
        )
        train_s = time.perf_counter() - t_train
        weights = ft.get_weights(self.model)
        fit_s = time.perf_counter() - start
        metrics = {"site": self.site, "train_s": train_s, "fit_s": fit_s, "loss": loss}
        return weights, len(y), metrics

    def evaluate(self, parameters, config):
        torch.set_num_threads(1)
        _, _, x, y = ft.site_arrays(self.data_dir, self.split_path, self.site, self.seed)
        ft.set_weights(self.model, parameters)
        loss, acc = ft.evaluate(self.model, x, y)
        return loss, len(y), {"accuracy": acc}


class TimedFedAvg(FedAvg):
    """FedAvg that records when each round starts and ends, and the clients' fit metrics."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.rounds: dict[int, dict] = {}

    def _mark(self, rnd: int, key: str | None = None) -> dict:
        now = time.perf_counter()
        with self.lock:
            r = self.rounds.setdefault(rnd, {})
            if key:
                r[key] = now
            r["end"] = now
            return r

    def configure_fit(self, server_round, parameters, client_manager):
        self._mark(server_round, "start")
        out = super().configure_fit(server_round, parameters, client_manager)
        self._mark(server_round)
        return out

    def aggregate_fit(self, server_round, results, failures):
        r = self._mark(server_round, "fit_results")
        r["clients"] = [dict(res.metrics, examples=res.num_examples) for _, res in results]
        r["failures"] = len(failures)
        out = super().aggregate_fit(server_round, results, failures)
        self._mark(server_round, "fit_end")
        return out

    def evaluate(self, server_round, parameters):
        t = time.perf_counter()
        out = super().evaluate(server_round, parameters)
        r = self._mark(server_round)
        r["server_eval_s"] = time.perf_counter() - t
        if out is not None:
            r["test_loss"], r["test_accuracy"] = out[0], out[1].get("accuracy")
        return out

    def configure_evaluate(self, server_round, parameters, client_manager):
        out = super().configure_evaluate(server_round, parameters, client_manager)
        self._mark(server_round)
        return out

    def aggregate_evaluate(self, server_round, results, failures):
        out = super().aggregate_evaluate(server_round, results, failures)
        r = self._mark(server_round)
        if results:
            n = sum(res.num_examples for _, res in results)
            r["site_accuracy"] = (
                sum(res.metrics["accuracy"] * res.num_examples for _, res in results) / n
            )
        return out


def build(args, split_path: str, strategy_box: list):
    x_test, y_test = ft.raw_images_labels(args.data, "t10k")  # uint8: scaled per batch
    eval_model = ft.TwoNN()

    def evaluate_fn(server_round, parameters, config):
        ft.set_weights(eval_model, parameters)
        loss, acc = ft.evaluate(eval_model, x_test, y_test)
        return loss, {"accuracy": acc}

    def fit_config(server_round):
        return {"server_round": server_round}

    def weighted_loss(metrics):
        n = sum(k for k, _ in metrics)
        return {"loss": sum(k * m["loss"] for k, m in metrics) / n} if n else {}

    def server_fn(context: Context):
        strategy = TimedFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=args.fraction_evaluate,
            min_fit_clients=args.sites,
            min_evaluate_clients=args.sites if args.fraction_evaluate > 0 else 0,
            min_available_clients=args.sites,
            evaluate_fn=evaluate_fn,
            on_fit_config_fn=fit_config,
            initial_parameters=ndarrays_to_parameters(ft.get_weights(ft.initial_model(args.seed))),
            fit_metrics_aggregation_fn=weighted_loss,
        )
        strategy_box.append(strategy)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    data_dir, seed = args.data, args.seed

    def client_fn(context: Context):
        site = int(context.node_config["partition-id"])
        return SiteClient(site, data_dir, split_path, seed).to_client()

    return ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn)


def summarize(strategy: TimedFedAvg, args, wall_s: float, t0: float, split_path: str) -> dict:
    per_round = []
    for rnd in sorted(k for k in strategy.rounds if k >= 1):
        r = strategy.rounds[rnd]
        clients = r.get("clients", [])
        fit = [c["fit_s"] for c in clients]
        train = [c["train_s"] for c in clients]
        round_s = r["end"] - r["start"]
        slowest_fit = max(fit, default=0.0)
        per_round.append(
            {
                "round": rnd,
                "round_s": round_s,
                "fit_phase_s": r.get("fit_end", r["end"]) - r["start"],
                "server_eval_s": r.get("server_eval_s"),
                "clients": len(clients),
                "failures": r.get("failures"),
                "slowest_fit_s": slowest_fit,
                "slowest_train_s": max(train, default=0.0),
                "sum_fit_s": sum(fit),
                "overhead_s": round_s - slowest_fit,
                "packed_overhead_s": round_s - sum(fit) / args.cpus,
                "test_accuracy": r.get("test_accuracy"),
                "test_loss": r.get("test_loss"),
                "site_accuracy": r.get("site_accuracy"),
            }
        )
    first = strategy.rounds.get(1, {}).get("start", t0)
    last = per_round[-1] if per_round else {}

    def med(key):
        values = [p[key] for p in per_round if p[key] is not None]
        return statistics.median(values) if values else None

    return {
        "framework": f"flwr {_flwr_version()}",
        "torch": torch.__version__,
        "rounds": len(per_round),
        "sites": args.sites,
        "cpus": args.cpus,
        "split": split_path,
        "wall_s": wall_s,
        "startup_s": first - t0,
        "rounds_wall_s": sum(p["round_s"] for p in per_round),
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "final_site_accuracy": last.get("site_accuracy"),
        "round_s_median": med("round_s"),
        "slowest_fit_s_median": med("slowest_fit_s"),
        "overhead_s_median": med("overhead_s"),
        "packed_overhead_s_median": med("packed_overhead_s"),
        "per_round": per_round,
    }


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=ft.FASHION_MNIST, help="folder of IDX .gz files")
    parser.add_argument("--split", help="JSON list of index lists (e.g. entente's split.json)")
    parser.add_argument(
        "--write-split",
        default=os.path.join(HERE, "out", "fmnist-split.json"),
        help="where to write the split made when --split is not given",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sites", type=int, default=ft.NUM_SITES)
    parser.add_argument(
        "--fraction-evaluate",
        type=float,
        default=0.0,
        help="share of sites evaluating on their own test split each round (default 0)",
    )
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's CPUs")
    parser.add_argument("--server-threads", type=int, default=1, help="torch threads, server")
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument("--verbose", action="store_true", help="Flower's DEBUG logging")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import_s = t0 - T_START
    torch.set_num_threads(args.server_threads)
    y_train = ft.train_labels(args.data)
    split, split_path = ft.ensure_split(args.split, y_train, args.write_split, args.seed)
    if len(split) != args.sites:
        parser.error(f"{split_path} has {len(split)} sites, not --sites {args.sites}")
    split_path = os.path.abspath(split_path)

    strategy_box: list[TimedFedAvg] = []
    server_app, client_app = build(args, split_path, strategy_box)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.cpus, "num_gpus": 0},
    }
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=args.sites,
        backend_config=backend_config,
        verbose_logging=args.verbose,
    )
    wall_s = time.perf_counter() - T_START
    if not strategy_box:
        sys.exit("the ServerApp never built its strategy (see Flower's log above)")
    result = summarize(strategy_box[0], args, wall_s, t0, split_path)
    result["import_s"] = import_s
    text = json.dumps(result)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.flush()
    print(text, flush=True)


if __name__ == "__main__":
    main()
