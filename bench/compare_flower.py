#!/usr/bin/env python3
"""Runs the Fashion-MNIST simulation benchmark in entente and in Flower, one after the other,
each under bench/pss.py, and prints the two side by side.

    python3 bench/compare_flower.py [--rounds 30] [--split bench/out/fmnist-split.json]

entente runs `bench/entente_fmnist.py` with the entente venv's Python (`$ENTENTE_VENV`,
default /root/.cache/entente-ci-venv: the `entente` package and torch), Flower runs
`bench/flower_fmnist.py` with the bench venv's (`$FLOWER_VENV`, default
/root/.cache/entente-bench-venv: flwr 1.42 with Ray, and torch). Both train the same 2NN from
the same initial model on the same split with the same code (`bench/fmnist_torch.py`).
entente's engine asks every site to evaluate the global model on its own test split each round,
so Flower runs with `--fraction-evaluate 1` unless `--flower-fraction-evaluate` says otherwise.
entente runs its clients in `--entente-processes` worker processes (default: the CPU count, as
Ray has one actor per CPU; 0: threads of one process).

Each side's result JSON, peak-PSS JSON and log go to `--outdir` (default bench/out) as
compare-{entente,flower}-{result,pss}.json and compare-{entente,flower}.log; the table, the
load averages seen and each side's processes at its peak PSS go to compare.json there too.
This script needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def venv_python(env: str, default: str) -> str:
    python = os.path.join(os.environ.get(env) or default, "bin", "python")
    if not os.access(python, os.X_OK):
        sys.exit(f"no Python at {python} (set {env} to the venv's folder)")
    return python


def run_side(name: str, python: str, script: str, extra: list[str], args) -> dict:
    """Runs one side under pss.py; returns its result, its peak PSS and the load averages."""
    result_path = os.path.join(args.outdir, f"compare-{name}-result.json")
    pss_path = os.path.join(args.outdir, f"compare-{name}-pss.json")
    log_path = os.path.join(args.outdir, f"compare-{name}.log")
    for path in (result_path, pss_path):
        if os.path.exists(path):
            os.remove(path)
    command = [
        python,
        os.path.join(HERE, "pss.py"),
        "--out",
        pss_path,
        "--",
        python,
        os.path.join(HERE, script),
        "--split",
        args.split,
        "--rounds",
        str(args.rounds),
        "--seed",
        str(args.seed),
        "--out",
        result_path,
        *extra,
    ]
    load_before = os.getloadavg()
    print(f"== {name}: {' '.join(command)}", flush=True)
    print(f"   load average before: {fmt_load(load_before)}; log {log_path}", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    print(
        f"   exit {rc} after {elapsed:.1f} s; load average after: {fmt_load(load_after)}",
        flush=True,
    )
    if rc != 0 or not os.path.exists(result_path):
        with open(log_path) as f:
            tail = f.read()[-3000:]
        sys.exit(f"{name} failed (exit {rc}); the end of {log_path}:\n{tail}")
    with open(result_path) as f:
        result = json.load(f)
    with open(pss_path) as f:
        pss = json.load(f)
    return {
        "result": result,
        "pss": pss,
        "load_before": load_before,
        "load_after": load_after,
    }


def peak_processes(pss: dict, top: int = 6) -> str:
    """The largest processes at the peak: PSS (anonymous + file-backed) MiB and name."""
    parts = [
        f"{p['pss_mib']:.0f} ({p.get('pss_anon_mib') or 0:.0f}+{p.get('pss_file_mib') or 0:.0f}) "
        f"{p['name']}"
        for p in pss.get("at_peak", [])[:top]
    ]
    rest = pss.get("at_peak", [])[top:]
    if rest:
        parts.append(f"{sum(p['pss_mib'] for p in rest):.0f} in {len(rest)} more")
    return "; ".join(parts)


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.2f}%"
    return f"{value:.{digits}f}{unit}"


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(ent: dict, flw: dict) -> tuple[list[tuple[str, str, str, str]], dict]:
    e, f = ent["result"], flw["result"]
    ep, fp = ent["pss"]["peak_pss_mib"], flw["pss"]["peak_pss_mib"]

    def row(label, key, digits=3, unit="", note=""):
        return (label, fmt(e.get(key), unit, digits), fmt(f.get(key), unit, digits), note)

    wall = ratio(f["wall_s"], e["wall_s"])
    rows = [
        row("wall time (s)", "wall_s", 2, note=f"Flower/entente {wall}"),
        ("peak PSS (MiB)", fmt(ep, digits=1), fmt(fp, digits=1), f"entente/Flower {ratio(ep, fp)}"),
        row("final test accuracy", "final_test_accuracy", unit="%"),
        row("final site accuracy", "final_site_accuracy", unit="%"),
        row(
            "median round (s)",
            "round_s_median",
            note=f"Flower/entente {ratio(f['round_s_median'], e['round_s_median'])}",
        ),
        row("median slowest fit (s)", "slowest_fit_s_median"),
        row("median overhead (s)", "overhead_s_median", note="round - slowest fit"),
        row(
            "median packed overhead (s)",
            "packed_overhead_s_median",
            note="round - summed fit / CPUs",
        ),
        row("imports (s)", "import_s", 2),
        row("start-up (s)", "startup_s", 2, note="after the imports, to the first round"),
        row("sum of round times (s)", "rounds_wall_s", 2),
    ]
    figures = {
        "wall_s": {"entente": e["wall_s"], "flower": f["wall_s"]},
        "peak_pss_mib": {"entente": ep, "flower": fp},
        "final_test_accuracy": {
            "entente": e["final_test_accuracy"],
            "flower": f["final_test_accuracy"],
        },
        "round_s_median": {"entente": e["round_s_median"], "flower": f["round_s_median"]},
        "overhead_s_median": {
            "entente": e["overhead_s_median"],
            "flower": f["overhead_s_median"],
        },
        "packed_overhead_s_median": {
            "entente": e["packed_overhead_s_median"],
            "flower": f["packed_overhead_s_median"],
        },
        "flower_over_entente_wall": f["wall_s"] / e["wall_s"],
        "entente_over_flower_pss": ep / fp if fp else None,
    }
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--split", default=os.path.join(HERE, "out", "fmnist-split.json"))
    parser.add_argument("--outdir", default=os.path.join(HERE, "out"))
    parser.add_argument(
        "--flower-fraction-evaluate",
        type=float,
        default=1.0,
        help="Flower's share of sites evaluating each round (entente: all of them)",
    )
    parser.add_argument(
        "--entente-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="entente's worker processes for the clients (default: the CPU count, "
        "%(default)s; 0: threads of one process)",
    )
    parser.add_argument("--flower-first", action="store_true", help="run Flower first")
    args = parser.parse_args()
    args.split = os.path.abspath(args.split)
    if not os.path.exists(args.split):
        sys.exit(f"no split at {args.split}: python bench/fmnist_torch.py --write-split PATH")
    os.makedirs(args.outdir, exist_ok=True)

    ent_py = venv_python("ENTENTE_VENV", "/root/.cache/entente-ci-venv")
    flw_py = venv_python("FLOWER_VENV", "/root/.cache/entente-bench-venv")
    sides = [
        ("entente", ent_py, "entente_fmnist.py", ["--processes", str(args.entente_processes)]),
        (
            "flower",
            flw_py,
            "flower_fmnist.py",
            ["--fraction-evaluate", str(args.flower_fraction_evaluate)],
        ),
    ]
    if args.flower_first:
        sides.reverse()
    print(f"{os.cpu_count()} CPUs; load average at the start: {fmt_load(os.getloadavg())}")
    runs = {name: run_side(name, py, script, extra, args) for name, py, script, extra in sides}
    ent, flw = runs["entente"], runs["flower"]
    rows, figures = table(ent, flw)

    print()
    print(
        f"Fashion-MNIST, {args.rounds} rounds, {ent['result']['sites']} sites, "
        f"{ent['result']['framework']} vs {flw['result']['framework']}, torch "
        f"{ent['result']['torch']} / {flw['result']['torch']}"
    )
    widths = [max(len(r[i]) for r in rows + [("", "entente", "Flower", "")]) for i in range(4)]
    header = ("", "entente", "Flower", "")
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
    print(
        "load average (1, 5, 15 min) before/after: "
        f"entente {fmt_load(ent['load_before'])} / {fmt_load(ent['load_after'])}; "
        f"Flower {fmt_load(flw['load_before'])} / {fmt_load(flw['load_after'])}"
    )
    print(
        "1-min load average during the run (mean / max; the run's own processes count): "
        + "; ".join(
            f"{name} {r['pss'].get('load1_mean')} / {r['pss'].get('load1_max')}"
            for name, r in runs.items()
        )
    )
    for name, r in runs.items():
        print(f"{name} at its peak PSS, MiB (anon+file): {peak_processes(r['pss'])}")
    summary = {
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "entente_processes": args.entente_processes,
        "flower_fraction_evaluate": args.flower_fraction_evaluate,
        "figures": figures,
        "load": {
            name: {
                "before": list(r["load_before"]),
                "after": list(r["load_after"]),
                "during_load1_mean": r["pss"].get("load1_mean"),
                "during_load1_max": r["pss"].get("load1_max"),
            }
            for name, r in runs.items()
        },
        "at_peak": {name: r["pss"].get("at_peak") for name, r in runs.items()},
    }
    with open(os.path.join(args.outdir, "compare.json"), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
