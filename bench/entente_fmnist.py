#!/usr/bin/env python3
"""entente side of the entente-vs-Flower simulation benchmark (Fashion-MNIST, ten sites).

The workload of `bench/flower_fmnist.py` through `entente.simulate`: one `entente.Client` per
site wrapping the shared code in `bench/fmnist_torch.py` (the 2NN 784-200-200-10, SGD lr 0.05,
batch 32, one local epoch, one torch thread per client, 10% of each site's examples kept out
of training as its own test split, the per-(site, round) shuffle seeds of `shuffle_seed`), all
ten sites every round, FedAvg weighted by examples. Both start from `initial_model(--seed)`:
its parameters are written as the manifest's `kind = "external"` init file. The coordinator
evaluates the global model on the 10,000 t10k images each round in Rust (`eval_data`).

The manifest and the init file are written to a temporary folder, and so is the run folder
unless `--run-dir` is given. As the manifest's `site_test_fraction` is not 0, entente's round
engine also asks every site to evaluate the new global model on its own test split each round
(federated evaluation), which `flower_fmnist.py` does only with `--fraction-evaluate 1`.

`--processes N` (default: the CPU count) passes `processes=N` to `entente.simulate`: N worker
processes, forked from this one after it has imported torch, read the training images, run one
training step on a dummy batch (`warm_up`) and frozen its objects (`gc.freeze()`), each build
their share of the sites' clients and answer their calls, so N sites train at once; this
process runs the round engine and the coordinator's evaluation. `--processes 0` keeps every
client on a thread of this process, where the interpreter lock lets one train at a time. The
clients read their rows from the raw uint8 images this process read before forking (shared
copy-on-write, never written, so never copied), and the shared training loop scales each
minibatch to float32 as it goes.

Each client records its own fit and evaluate calls (entente reads only `loss` from the fit
metrics) as JSON lines in a file of its own in the temporary folder (`time.monotonic()`, one
clock for every process on Linux), which this process reads after the run, so that per round
(metrics.jsonl's `seconds`, from the selection to the end of the federated evaluation) the
script can report: the slowest client's fit time, the overhead (round time less the slowest
fit), the packed overhead (round time less the summed fit time divided by the CPUs the clients
can use, as flower_fmnist.py has it), and where the round went (fit phase, evaluation phase).

Prints a JSON object on the last line of stdout (and to `--out`) with the keys of
`flower_fmnist.py`'s: `wall_s` (from before the imports of torch and entente to the return of
`entente.simulate`; `import_s` of it is the imports), the final global test accuracy, medians
and the per-round figures.

    python bench/pss.py --out bench/out/entente-pss.json -- \\
        python bench/entente_fmnist.py --split bench/out/fmnist-split.json --rounds 30 \\
        --processes 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

T_START = time.monotonic()  # before torch and entente are imported
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import entente  # noqa: E402
import fmnist_torch as ft  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


class CallLog:
    """One client's record of its calls, appended as JSON lines to a file of its own, so that
    it works in whichever process the client lives: kind, site, round, start and end
    (time.monotonic(): CLOCK_MONOTONIC, the same clock in every process), cpu_s (the calling
    thread's CPU time: the rest of the call's wall time it waited, for the interpreter lock
    or for a core), train_s and the pid of the process that ran it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = None

    def add(self, **call) -> None:
        if self.file is None:  # opened by the process that writes, line-buffered
            self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open
        self.file.write(json.dumps(call) + "\n")


def read_calls(folder: str) -> list[dict]:
    """Every record the clients' CallLogs wrote in `folder`."""
    calls = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            calls += [json.loads(line) for line in f if line.strip()]
    return calls


class SiteClient(entente.Client):
    """One site: trains the shared 2NN on its own 90% and evaluates on its own 10%."""

    def __init__(self, site: int, data_dir: str, split_path: str, seed: int, log: CallLog):
        self.site = site
        self.data_dir = data_dir
        self.split_path = split_path
        self.seed = seed
        self.log = log
        self.model = ft.TwoNN()
        self.keys = list(self.model.state_dict().keys())
        self.last_round = 0
        self.evaluated = -1

    def fit(self, params, config):
        start, cpu = time.monotonic(), time.thread_time()
        torch.set_num_threads(1)
        x, y, _, _ = ft.site_arrays(self.data_dir, self.split_path, self.site, self.seed)
        ft.set_weights(self.model, [params[k] for k in self.keys])
        rnd = int(config["round"])
        t_train = time.monotonic()
        loss = ft.train_one_epoch(
            self.model, x, y, ft.LR, ft.BATCH, ft.shuffle_seed(self.seed, self.site, rnd)
        )
        train_s = time.monotonic() - t_train
        weights = dict(zip(self.keys, ft.get_weights(self.model), strict=True))
        end = time.monotonic()
        self.last_round = rnd
        self.log.add(
            kind="fit",
            site=self.site,
            round=rnd,
            start=start,
            end=end,
            cpu_s=time.thread_time() - cpu,
            train_s=train_s,
            pid=os.getpid(),
        )
        metrics = {"site": self.site, "train_s": train_s, "fit_s": end - start, "loss": loss}
        return weights, len(y), metrics

    def evaluate(self, params, config):
        # entente's evaluate config is empty: the round is the last one this site trained,
        # and a second evaluation of that round is the one after the run (round 0 here).
        rnd = self.last_round if self.evaluated != self.last_round else 0
        self.evaluated = self.last_round
        start, cpu = time.monotonic(), time.thread_time()
        torch.set_num_threads(1)
        _, _, x, y = ft.site_arrays(self.data_dir, self.split_path, self.site, self.seed)
        ft.set_weights(self.model, [params[k] for k in self.keys])
        loss, acc = ft.evaluate(self.model, x, y)
        end = time.monotonic()
        self.log.add(
            kind="evaluate",
            site=self.site,
            round=rnd,
            start=start,
            end=end,
            cpu_s=time.thread_time() - cpu,
            train_s=0.0,
            pid=os.getpid(),
        )
        return loss, len(y), {"accuracy": acc}


def warm_up() -> None:
    """Before the workers are forked: one training step and one evaluation on a dummy batch,
    so that the modules PyTorch imports at its first optimizer step (torch._dynamo, sympy and
    some 900 more, about 90 MB) are imported once, here, and shared with the workers instead
    of being imported again by each; then `gc.freeze()`, so that the workers' garbage
    collections do not write to (and so copy) the pages of every object made so far."""
    model = ft.TwoNN()
    x, y = np.zeros((2, 784), np.uint8), np.zeros(2, np.int64)
    ft.train_one_epoch(model, x, y, ft.LR, 2, 0)
    ft.evaluate(model, x, y)
    gc.collect()
    gc.freeze()


def site_name(i: int) -> str:
    return f"site-{i + 1:02d}"


def write_manifest(folder: str, args, split_path: str, sites: int) -> str:
    """The federation of flower_fmnist.py as an entente manifest, with the PyTorch initial
    model as its external init file; returns the manifest's path."""
    init = os.path.join(folder, "init.safetensors")
    model = ft.initial_model(args.seed)
    entente.save_params({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, init)
    lines = [
        "[federation]",
        'name = "fmnist-bench"',
        f"seed = {args.seed}",
        "",
        "[data]",
        'format = "idx"',
        f"path = {json.dumps(os.path.abspath(args.data))}",
        f"site_test_fraction = {ft.SITE_TEST_FRACTION}",
        'partition = "file"',
        f"split_file = {json.dumps(split_path)}",
        "shape = [1, 28, 28]",
        f"classes = {ft.NUM_CLASSES}",
        "",
    ]
    for i in range(sites):
        lines += ["[[sites]]", f'name = "{site_name(i)}"', ""]
    lines += [
        "[model]",
        'kind = "external"',
        'init = "init.safetensors"',
        "",
        "[training]",
        f"rounds = {args.rounds}",
        "local_epochs = 1",
        f"batch_size = {ft.BATCH}",
        f"learning_rate = {ft.LR}",
        'optimizer = "sgd"',
        "",
        "[strategy]",
        'kind = "fedavg"',
        "",
        "[selection]",
        "fraction = 1.0",
        f"min_sites = {sites}",
    ]
    path = os.path.join(folder, "manifest.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def read_rounds(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(
    rounds: list[dict], calls: list[dict], result, args, timing: dict, split_path: str
) -> dict:
    cpus = timing["cpus"]
    per_round = []
    for rec in rounds:
        rnd = int(rec["round"])
        fits = [c for c in calls if c["kind"] == "fit" and c["round"] == rnd]
        evals = [c for c in calls if c["kind"] == "evaluate" and c["round"] == rnd]
        fit = [c["end"] - c["start"] for c in fits]
        ev = [c["end"] - c["start"] for c in evals]
        round_s = float(rec["seconds"])
        slowest_fit = max(fit, default=0.0)
        test = rec.get("test") or {}
        federated = rec.get("federated") or {}
        fit_start = min((c["start"] for c in fits), default=None)
        fit_end = max((c["end"] for c in fits), default=None)
        eval_start = min((c["start"] for c in evals), default=None)
        eval_end = max((c["end"] for c in evals), default=None)
        # A worker process answers its sites one after the other: the one with the most
        # work in the round (fits and evaluations) bounds it.
        busy: dict[int, float] = {}
        for c in fits + evals:
            busy[c["pid"]] = busy.get(c["pid"], 0.0) + c["end"] - c["start"]
        per_round.append(
            {
                "round": rnd,
                "round_s": round_s,
                "fit_phase_s": None if fit_start is None else fit_end - fit_start,
                # From the last fit's return to the first evaluate call: aggregation and the
                # coordinator's own evaluation on the t10k images.
                "between_s": None if eval_start is None else eval_start - fit_end,
                "eval_phase_s": None if eval_start is None else eval_end - eval_start,
                "clients": len(fits),
                "accepted": len(rec.get("accepted", [])),
                "slowest_fit_s": slowest_fit,
                "slowest_train_s": max((c["train_s"] for c in fits), default=0.0),
                "sum_fit_s": sum(fit),
                # The fits' own CPU time: what they would take with nothing to wait for.
                "sum_fit_cpu_s": sum(c["cpu_s"] for c in fits),
                "sum_eval_s": sum(ev),
                "busiest_process_s": max(busy.values(), default=0.0) if args.processes else None,
                "overhead_s": round_s - slowest_fit,
                "packed_overhead_s": round_s - sum(fit) / cpus,
                "test_accuracy": test.get("accuracy"),
                "test_loss": test.get("loss"),
                "site_accuracy": federated.get("accuracy"),
            }
        )
    last = per_round[-1] if per_round else {}

    def med(key):
        values = [p[key] for p in per_round if p[key] is not None]
        return statistics.median(values) if values else None

    first_fit = min((c["start"] for c in calls), default=timing["t0"])
    summary = result.summary
    return {
        "framework": f"entente {entente.__version__}",
        "torch": torch.__version__,
        "rounds": len(per_round),
        "sites": args.sites,
        "cpus": cpus,
        "processes": args.processes,
        # How many processes the clients' calls ran in (1: this one, with --processes 0).
        "client_pids": len({c["pid"] for c in calls}),
        "split": split_path,
        "wall_s": timing["wall_s"],
        "import_s": timing["import_s"],
        "startup_s": first_fit - timing["t0"],
        "simulate_s": timing["simulate_s"],
        "rounds_wall_s": sum(p["round_s"] for p in per_round),
        "final_test_accuracy": summary.get("federated_accuracy", last.get("test_accuracy")),
        "final_test_loss": summary.get("federated_loss", last.get("test_loss")),
        "final_site_accuracy": summary.get("federated_site_accuracy"),
        "round_s_median": med("round_s"),
        "slowest_fit_s_median": med("slowest_fit_s"),
        "overhead_s_median": med("overhead_s"),
        "packed_overhead_s_median": med("packed_overhead_s"),
        "fit_phase_s_median": med("fit_phase_s"),
        "between_s_median": med("between_s"),
        "eval_phase_s_median": med("eval_phase_s"),
        "sum_fit_s_median": med("sum_fit_s"),
        "sum_fit_cpu_s_median": med("sum_fit_cpu_s"),
        "sum_eval_s_median": med("sum_eval_s"),
        "busiest_process_s_median": med("busiest_process_s"),
        "run_dir": str(result.run_dir) if args.run_dir else None,
        "per_round": per_round,
    }


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
        "--run-dir", help="keep entente's run folder here (default: a temporary folder)"
    )
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument(
        "--progress", action="store_true", help="entente's progress bar (on a terminal)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for the clients (default: the CPU count, %(default)s); "
        "0: every client on a thread of this process",
    )
    args = parser.parse_args()
    if args.processes < 0:
        parser.error("--processes must be 0 or more")

    t0 = time.monotonic()
    import_s = t0 - T_START
    torch.set_num_threads(1)
    y_train = ft.train_labels(args.data)
    split, split_path = ft.ensure_split(args.split, y_train, args.write_split, args.seed)
    if len(split) != args.sites:
        parser.error(f"{split_path} has {len(split)} sites, not --sites {args.sites}")
    split_path = os.path.abspath(split_path)
    del split, y_train  # the clients read them again, as numpy arrays
    # The raw training images (uint8, 47 MB), read once here before the workers are forked:
    # the clients copy their own rows out of this array at each call, and as nothing writes to
    # it the workers share its pages with this process instead of each reading its own.
    ft.raw_train(args.data)
    if args.processes:
        warm_up()

    names = {site_name(i): i for i in range(args.sites)}
    if args.processes:
        # The clients' processes train at once, one core each at most.
        cpus = min(args.processes, args.sites, os.cpu_count() or 1)
    else:
        # entente's rayon pool runs the sites' calls: RAYON_NUM_THREADS, else one per CPU.
        cpus = int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="entente-fmnist-") as tmp:
        calls_dir = os.path.join(tmp, "calls")
        os.mkdir(calls_dir)

        def client_fn(name: str) -> SiteClient:
            # Runs in the worker process that will hold the client (or here, without them).
            log = CallLog(os.path.join(calls_dir, f"{name}.jsonl"))
            return SiteClient(names[name], args.data, split_path, args.seed, log)

        manifest = write_manifest(tmp, args, split_path, args.sites)
        out = args.run_dir or os.path.join(tmp, "run")
        t_sim = time.monotonic()
        result = entente.simulate(
            manifest,
            client_fn,
            out=out,
            quiet=not args.progress,
            eval_data=args.data,
            processes=args.processes or None,
            # This process has run torch only with one thread (no OpenMP team to inherit), so
            # forking is safe, and the workers share its imports and images.
            start_method="fork" if args.processes else None,
        )
        simulate_s = time.monotonic() - t_sim
        wall_s = time.monotonic() - T_START
        rounds = read_rounds(str(result.run_dir))
        calls = read_calls(calls_dir)
    timing = {
        "t0": t0,
        "import_s": import_s,
        "wall_s": wall_s,
        "simulate_s": simulate_s,
        "cpus": cpus,
    }
    summary = summarize(rounds, calls, result, args, timing, split_path)
    text = json.dumps(summary)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.flush()
    print(text, flush=True)


if __name__ == "__main__":
    main()
