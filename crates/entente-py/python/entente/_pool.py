"""Clients in worker processes, so that Python sites train in parallel.

In one process the interpreter lock lets one Python call run at a time, so clients whose
training loop holds it (most do, between framework kernels) take turns. With ``processes=N``,
:func:`entente.simulate` starts N worker processes; each builds the clients of its share of the
sites with ``client_fn`` and answers ``fit`` and ``evaluate`` for them. The simulation's own
process holds a :class:`RemoteClient` per site, which forwards each call over a pipe and waits
for the answer with the interpreter lock released. Checks of what a client returns run in the
worker (``entente._bridge``), as they would in one process.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from entente import _bridge


class ClientFailed(Exception):
    """A client's call raised in its worker process; the message is the original's."""


def _serve(conn: Connection, client_fn: Callable[[str], Any | None], sites: list[str]) -> None:
    """A worker's loop: build its sites' clients, then answer calls until told to stop."""
    try:
        clients = {site: client_fn(site) for site in sites}
        conn.send(("ready", [site for site, c in clients.items() if c is None]))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"client_fn raised {type(e).__name__}: {e}", traceback.format_exc()))
        return
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        method, site, args = request
        try:
            result = getattr(_bridge, method)(clients[site], *args)
            conn.send(("ok", result))
        except KeyboardInterrupt:
            return
        except _bridge.InvalidReturn as e:
            conn.send(("invalid", str(e), ""))
        except BaseException as e:  # noqa: BLE001 - a site's failure, sent to the parent
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


class _Worker:
    def __init__(self, ctx: Any, client_fn: Callable[[str], Any | None], sites: list[str]) -> None:
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(theirs, client_fn, sites), daemon=True)
        self.process.start()
        theirs.close()
        self.lock = threading.Lock()
        self.own_trainer: list[str] = []

    def started(self) -> None:
        status, *rest = self.conn.recv()
        if status != "ready":
            message, trace = rest
            raise ClientFailed(f"{message}\n{trace}")
        self.own_trainer = rest[0]

    def call(self, method: str, site: str, args: tuple) -> Any:
        with self.lock:
            self.conn.send((method, site, args))
            try:
                status, *rest = self.conn.recv()
            except EOFError as e:
                raise ClientFailed(f"the worker process of site {site} ended") from e
        if status == "ok":
            return rest[0]
        message, trace = rest
        if status == "invalid":
            raise _bridge.InvalidReturn(message)
        print(f"site {site}: {method} failed in its worker process:\n{trace}", flush=True)
        raise ClientFailed(message)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


class RemoteClient:
    """Stands in for one site's client in the simulation's process (see ``_bridge``)."""

    def __init__(self, worker: _Worker, site: str) -> None:
        self.worker = worker
        self.site = site

    def call(self, method: str, args: tuple) -> Any:
        """Runs ``_bridge.<method>(client, *args)`` in the worker; raises its failure."""
        return self.worker.call(method, self.site, args)


def _fork_hazard() -> str | None:
    """Why forking this process would be unsafe, if it would: a framework whose thread pools
    (TensorFlow's runtime, PyTorch's OpenMP team once it has run an operation) do not survive
    fork, so that a forked worker can deadlock."""
    for module in ("tensorflow", "torch"):
        if module in sys.modules:
            return (
                f"{module} is loaded in this process, and its threads do not survive fork (pass "
                f"start_method='fork' only if it has run no operation yet)"
            )
    return None


def default_start_method() -> str:
    """fork (workers share the parent's imports and data) unless it is unavailable or unsafe
    here, else spawn (client_fn must then be a module-level function)."""
    if "fork" in multiprocessing.get_all_start_methods() and _fork_hazard() is None:
        return "fork"
    return "spawn"


class Pool:
    """Worker processes holding the clients of ``sites`` (dealt round-robin)."""

    def __init__(
        self,
        client_fn: Callable[[str], Any | None],
        sites: Sequence[str],
        processes: int,
        start_method: str | None = None,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a whole number of at least 1, not {processes!r}")
        method = start_method or default_start_method()
        if method != "fork":
            try:
                pickle.dumps(client_fn)
            except Exception as e:
                raise ValueError(
                    f"with the {method!r} start method client_fn must be picklable (a "
                    f"module-level function), and it is not ({e}); fork is not used because "
                    f"{_fork_hazard() or 'it was not asked for or is not available'}"
                ) from e
        ctx = multiprocessing.get_context(method)
        n = min(processes, len(sites))
        shares = [list(sites[i::n]) for i in range(n)]
        self.workers = [_Worker(ctx, client_fn, share) for share in shares]
        try:
            for w in self.workers:
                w.started()
        except BaseException:
            self.close()
            raise
        own = {s for w in self.workers for s in w.own_trainer}
        self.clients: dict[str, RemoteClient | None] = {}
        for w, share in zip(self.workers, shares, strict=False):
            for site in share:
                self.clients[site] = None if site in own else RemoteClient(w, site)

    def client(self, site: str) -> RemoteClient | None:
        """The stand-in for ``site``'s client (None: entente's own trainer)."""
        return self.clients[site]

    def close(self) -> None:
        """Stops every worker."""
        for w in self.workers:
            w.stop()
