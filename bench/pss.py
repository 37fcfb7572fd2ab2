#!/usr/bin/env python3
"""Runs a command and reports the peak summed PSS of its process tree.

Every `--interval` seconds (default 0.2) it finds the command's process and all of its
descendants (through the ppid field of /proc/*/stat) and adds up the `Pss:` line of each
one's /proc/PID/smaps_rollup. PSS splits shared pages among the processes mapping them, so
the sum does not count a shared library or a forked parent's pages twice. At the end it writes
a JSON object (peak MiB, when, how many processes then and each one's PSS at that moment,
split into anonymous memory and file-backed pages, samples, the 1-minute load average seen,
the command's exit code) to `--out` if given, and to stderr either way, and exits with the
command's exit code.

    python bench/pss.py --out peak.json -- python bench/flower_fmnist.py --rounds 30

Processes that leave the tree (daemons that double-fork and are re-parented to init) are no
longer counted; `--also-name` adds any process whose command line contains a given string
(for example `--also-name ray::` for Ray workers), wherever its parent is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _ppids() -> dict[int, int]:
    """pid -> ppid for every process now in /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm (field 2) is in parentheses and may hold spaces or parentheses itself.
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) >= 2:
            out[int(name)] = int(rest[1])
    return out


def _tree(root: int, ppids: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    seen = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _by_name(needles: list[str], ppids: dict[int, int]) -> set[int]:
    found: set[int] = set()
    if not needles:
        return found
    me = os.getpid()
    for pid in ppids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.add(pid)
    return found


# The smaps_rollup lines kept for each process (KiB): PSS, and of it anonymous memory (heap,
# copy-on-write copies of a forked parent's pages) and file-backed pages (libraries).
FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Rss", "Private_Dirty")


def _rollup_kib(pid: int) -> dict[str, int] | None:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in FIELDS:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        return None
    return out if "Pss" in out else None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    # The program's base name, and for an interpreter the script it runs.
    words = [os.path.basename(argv[0])]
    if len(argv) > 1 and words[0].startswith("python"):
        script = next((a for a in argv[1:] if not a.startswith("-")), "")
        words.append(os.path.basename(script))
    return " ".join(words)[:60]


def sample(root: int, also: list[str]) -> dict[int, dict[str, int]]:
    """The smaps_rollup FIELDS in KiB of every process now in `root`'s tree (and matched by
    `also`)."""
    ppids = _ppids()
    pids = _tree(root, ppids) | _by_name(also, ppids)
    out = {}
    for pid in pids:
        fields = _rollup_kib(pid)
        if fields is not None:
            out[pid] = fields
    return out


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Peak summed PSS of a command's process tree.",
        usage="%(prog)s [--out FILE] [--interval S] [--also-name STR] -- COMMAND [ARG...]",
    )
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument(
        "--also-name",
        action="append",
        default=[],
        metavar="STR",
        help="also count processes whose command line contains STR (repeatable)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")

    start = time.monotonic()
    proc = subprocess.Popen(command)
    peak_kib, peak_at, samples = 0, 0.0, 0
    peak: dict[int, tuple[dict[str, int], str]] = {}
    loads: list[float] = []
    try:
        while True:
            per_pid = sample(proc.pid, args.also_name)
            kib = sum(f["Pss"] for f in per_pid.values())
            samples += 1
            loads.append(os.getloadavg()[0])
            if kib > peak_kib:
                peak_kib, peak_at = kib, time.monotonic() - start
                peak = {pid: (f, _comm(pid)) for pid, f in per_pid.items()}
            if proc.poll() is not None:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        proc.terminate()
    rc = proc.wait()
    result = {
        "peak_pss_mib": round(peak_kib / 1024, 1),
        "peak_at_s": round(peak_at, 1),
        "processes_at_peak": len(peak),
        "peak_pss_anon_mib": _mib(sum(f.get("Pss_Anon", 0) for f, _ in peak.values())),
        "peak_pss_file_mib": _mib(sum(f.get("Pss_File", 0) for f, _ in peak.values())),
        "at_peak": [
            {
                "pid": pid,
                "pss_mib": _mib(f["Pss"]),
                "pss_anon_mib": _mib(f.get("Pss_Anon")),
                "pss_file_mib": _mib(f.get("Pss_File")),
                "rss_mib": _mib(f.get("Rss")),
                "private_dirty_mib": _mib(f.get("Private_Dirty")),
                "name": name,
            }
            for pid, (f, name) in sorted(peak.items(), key=lambda kv: -kv[1][0]["Pss"])
        ],
        # The 1-minute load average over the run (it counts the command's own processes).
        "load1_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load1_max": max(loads, default=None),
        "samples": samples,
        "interval_s": args.interval,
        "wall_s": round(time.monotonic() - start, 2),
        "returncode": rc,
        "command": command,
    }
    text = json.dumps(result)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text, file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
