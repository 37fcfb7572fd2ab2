"""entente: federated learning across institutions, with your own training loop.

A site brings its model code and its records; entente brings the rest: the manifest every
site enforces, mutual TLS, secure aggregation, differential privacy with a ledger each site
keeps, the audit log and crash resume. The Rust core runs all of that; this package plugs a
PyTorch, Keras or NumPy training loop in as the site's trainer.

- :class:`Client`: subclass it (``fit`` and ``evaluate``), or bring a Flower ``NumPyClient``.
- :func:`join`: this site's node in a deployment (``entente serve`` is the coordinator).
- :func:`simulate`: the whole federation in this process, one client per site.
- :mod:`entente.torch` and :mod:`entente.keras`: models to and from the canonical layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np

from entente import _native
from entente._client import Client, Config, Metrics, Params
from entente._native import EntenteError
from entente._pool import Pool

__all__ = [
    "Client",
    "Config",
    "EntenteError",
    "Metrics",
    "Params",
    "SimulationResult",
    "join",
    "load_params",
    "save_params",
    "simulate",
]
__version__: str = _native.__version__

StrPath = Union[str, "PathLike[str]"]


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` leaves: the run folder and its ``summary.json``."""

    run_dir: Path
    summary: dict[str, Any]

    @property
    def model_path(self) -> Path:
        """The final global model (safetensors, PyTorch layout)."""
        return self.run_dir / "model.safetensors"

    def load_model(self) -> Params:
        """The final global model as arrays."""
        return load_params(self.model_path)


def join(
    manifest: StrPath,
    *,
    coordinator: str,
    site: str | None = None,
    client: Any | None = None,
    keys: StrPath = "keys",
    ca: StrPath | None = None,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    data: StrPath | None = None,
    max_retries: int | None = None,
    audit_record: StrPath | None = None,
) -> int:
    """Runs this site's node until the coordinator says the run is finished.

    The node connects out to ``coordinator`` (``https://HOST:PORT``) with the site's
    certificate (``keys/sites/SITE.pem`` and ``.key``, or ``cert``/``key``), checks every task
    against its own copy of ``manifest`` and answers it with ``client`` (or, without one, with
    entente's own trainer on ``data``). Blocks until the run ends and returns its number of
    rounds; Ctrl-C stops the node cleanly and raises ``KeyboardInterrupt``. The interpreter is
    released while Rust waits, so heartbeats go on while the client trains. The audit-log
    heads the coordinator shows with every task are kept in ``audit_record`` (default: beside
    the manifest, ``STEM.SITE.audit-heads.jsonl``), for ``entente audit verify --against``.
    The federation's revocation list ``keys/revoked.crl`` (``entente keys revoke``), if there,
    is checked before every connection: a revoked coordinator is refused, and a revoked site
    does not start.
    """
    return _native.join(
        str(manifest),
        coordinator=coordinator,
        site=site,
        client=client,
        keys=str(keys),
        ca=None if ca is None else str(ca),
        cert=None if cert is None else str(cert),
        key=None if key is None else str(key),
        data=None if data is None else str(data),
        max_retries=max_retries,
        audit_record=None if audit_record is None else str(audit_record),
    )


def simulate(
    manifest: StrPath,
    client_fn: Callable[[str], Any | None],
    *,
    out: StrPath | None = None,
    overwrite: bool = False,
    rounds: int | None = None,
    quiet: bool = False,
    eval_data: StrPath | None = None,
    processes: int | None = None,
    start_method: str | None = None,
    mlflow: str | None = None,
    target_accuracy: float | None = None,
) -> SimulationResult:
    """Runs the manifest's federation in this process, one client per site.

    ``client_fn(site_name)`` returns that site's client (an :class:`entente.Client` or a
    Flower ``NumPyClient``), or ``None`` for entente's own trainer on the site's
    ``[[sites]] data``. Rounds run on entente's round engine with the manifest's strategy,
    secure aggregation and client-level DP, as in a deployment; the progress bar, the round
    lines and the run folder (``out``, default ``runs/NAME-TIME``; an existing folder that
    holds files is refused unless ``overwrite=True``) are those of ``entente simulate``.
    ``eval_data`` (an IDX folder or CSV file) is the coordinator's held-out test set,
    evaluated each round when entente can run the model itself. ``mlflow``
    (``http://HOST:PORT``) also logs the run to that MLflow tracking server, as
    ``entente simulate --mlflow`` does. ``target_accuracy`` (a share, such as ``0.85``) adds
    the first round whose global model reached it to the summary (``rounds_to_target``).

    Clients run in this process by default, where the interpreter lock lets one Python call
    run at a time. ``processes=N`` runs them in N worker processes instead, so that N sites
    train at once; a site is bound at its first call to the first free worker and stays
    there, so its client is one object for the run (a worker that takes a site another built
    at start-up calls ``client_fn`` for it again; see ``entente._pool``). Workers
    are forked by default (they share this process's imports and data), or spawned when fork
    is unavailable or unsafe (TensorFlow loaded here) or ``start_method="spawn"`` says so; a
    spawned worker needs ``client_fn`` to be a module-level function. The result is the same:
    every site's training is seeded by the manifest, and updates are aggregated in a fixed
    order.
    """
    if processes is None:
        return _simulate(
            manifest,
            client_fn,
            out,
            overwrite,
            rounds,
            quiet,
            eval_data,
            None,
            mlflow,
            target_accuracy,
        )
    pool = Pool(client_fn, _native.manifest_sites(str(manifest)), processes, start_method)
    try:
        # One engine thread per site: each waits on its worker, so all are in flight at once.
        threads = len(pool.clients)
        return _simulate(
            manifest,
            pool.client,
            out,
            overwrite,
            rounds,
            quiet,
            eval_data,
            threads,
            mlflow,
            target_accuracy,
        )
    finally:
        pool.close()


def _simulate(
    manifest: StrPath,
    client_fn: Callable[[str], Any | None],
    out: StrPath | None,
    overwrite: bool,
    rounds: int | None,
    quiet: bool,
    eval_data: StrPath | None,
    threads: int | None,
    mlflow: str | None,
    target_accuracy: float | None,
) -> SimulationResult:
    report = json.loads(
        _native.simulate(
            str(manifest),
            client_fn,
            out=None if out is None else str(out),
            overwrite=overwrite,
            rounds=rounds,
            quiet=quiet,
            eval_data=None if eval_data is None else str(eval_data),
            threads=threads,
            mlflow=mlflow,
            target_accuracy=target_accuracy,
        )
    )
    return SimulationResult(run_dir=Path(report["run_dir"]), summary=report["summary"])


def save_params(params: Mapping[str, np.ndarray], path: StrPath) -> None:
    """Writes ``params`` as a safetensors file that keeps their order (``model.init`` of a
    manifest with ``kind = "external"``; PyTorch's ``safetensors.torch.load_file`` reads it)."""
    names = list(params)
    arrays = [np.ascontiguousarray(params[n], dtype="<f4") for n in names]
    _native.save_params(
        str(path), names, [list(a.shape) for a in arrays], [a.tobytes() for a in arrays]
    )


def load_params(path: StrPath) -> Params:
    """Reads a safetensors file of float32 tensors, in its recorded order."""
    return {
        name: np.frombuffer(blob, dtype="<f4").reshape(tuple(shape)).copy()
        for name, shape, blob in _native.load_params(str(path))
    }
