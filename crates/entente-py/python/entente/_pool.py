"""Clients in worker processes, so that Python sites train in parallel.

In one process the interpreter lock lets one Python call run at a time, so clients whose
training loop holds it (most do, between framework kernels) take turns. With ``processes=N``,
:func:`entente.simulate` starts N worker processes that answer ``fit`` and ``evaluate`` for the
sites. The simulation's own process holds a :class:`RemoteClient` per site, which forwards each
call over a pipe and waits for the answer with the interpreter lock released. Checks of what a
client returns run in the worker (``entente._bridge``), as they would in one process.

Where a site's client lives:

- At start-up each worker builds the clients of a round-robin share of the sites with
  ``client_fn``, so that a failing ``client_fn`` and the sites that use entente's own trainer
  (``client_fn`` returns ``None``) are known before round 1.
- A site is bound to a worker at its first call: the first worker with nothing to do (the one
  that built the site's client if it is free, else another, which then builds its own with
  ``client_fn``, and the first drops its unused one). Sites of unequal size so spread over the
  workers as list scheduling does, instead of one worker taking the larger sites by the luck of
  the deal.
- From then on every call of that site goes to that worker, so a client is one object for the
  whole run and may keep state between rounds, as it does in one process.
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
        method, site, args, dropped = request
        for other in dropped:
            clients.pop(other, None)
        try:
            if site not in clients:
                clients[site] = _adopt(client_fn, site)
            result = getattr(_bridge, method)(clients[site], *args)
            conn.send(("ok", result))
        except KeyboardInterrupt:
            return
        except _bridge.InvalidReturn as e:
            conn.send(("invalid", str(e), ""))
        except BaseException as e:  # noqa: BLE001 - a site's failure, sent to the parent
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


def _adopt(client_fn: Callable[[str], Any | None], site: str) -> Any:
    """Builds the client of a site that another worker built first but this one now serves."""
    client = client_fn(site)
    if client is None:
        raise ValueError(
            f"client_fn({site!r}) returned None in one worker process and a client in another; "
            "it must give the same kind of answer for a site every time it is called"
        )
    return client


class _Worker:
    def __init__(self, ctx: Any, client_fn: Callable[[str], Any | None], sites: list[str]) -> None:
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(theirs, client_fn, sites), daemon=True)
        self.process.start()
        theirs.close()
        self.lock = threading.Lock()
        self.built = list(sites)
        self.own_trainer: list[str] = []
        self.dropped: list[str] = []  # sites whose clients it built and another serves
        self.dropped_lock = threading.Lock()

    def started(self) -> None:
        status, *rest = self.conn.recv()
        if status != "ready":
            message, trace = rest
            raise ClientFailed(f"{message}\n{trace}")
        self.own_trainer = rest[0]

    def call(self, method: str, site: str, args: tuple) -> Any:
        with self.lock:
            with self.dropped_lock:
                dropped, self.dropped = self.dropped, []
            self.conn.send((method, site, args, dropped))
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


class Binder:
    """Which worker serves each site: a site is bound at its first call to a worker with no
    call outstanding (preferring the one that built its client), waiting for one to come free
    if all are busy; later calls go to the same worker."""

    def __init__(self, builders: dict[str, int], workers: int) -> None:
        self.builders = builders
        self.outstanding = [0] * workers
        self.bound: dict[str, int] = {}
        self.changed = threading.Condition()

    def begin(self, site: str) -> tuple[int, bool]:
        """The worker that takes this call of ``site``, and whether the site has just moved
        away from the worker that built its client."""
        with self.changed:
            if site not in self.bound:
                self.changed.wait_for(lambda: 0 in self.outstanding)
                builder = self.builders[site]
                free = builder if self.outstanding[builder] == 0 else self.outstanding.index(0)
                self.bound[site] = free
                moved = free != builder
            else:
                moved = False
            worker = self.bound[site]
            self.outstanding[worker] += 1
            return worker, moved

    def end(self, worker: int) -> None:
        """The call that ``begin`` gave ``worker`` is answered."""
        with self.changed:
            self.outstanding[worker] -= 1
            self.changed.notify_all()


class RemoteClient:
    """Stands in for one site's client in the simulation's process (see ``_bridge``)."""

    def __init__(self, pool: Pool, site: str) -> None:
        self.pool = pool
        self.site = site

    def call(self, method: str, args: tuple) -> Any:
        """Runs ``_bridge.<method>(client, *args)`` in the site's worker; raises its failure."""
        return self.pool.call(method, self.site, args)


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
    """Worker processes answering the calls of ``sites``' clients (see the module's notes)."""

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
        self.workers = [_Worker(ctx, client_fn, list(sites[i::n])) for i in range(n)]
        try:
            for w in self.workers:
                w.started()
        except BaseException:
            self.close()
            raise
        own = {s for w in self.workers for s in w.own_trainer}
        builders = {site: i for i, w in enumerate(self.workers) for site in w.built}
        self.binder = Binder({s: i for s, i in builders.items() if s not in own}, n)
        self.clients: dict[str, RemoteClient | None] = {
            site: None if site in own else RemoteClient(self, site) for site in sites
        }

    def client(self, site: str) -> RemoteClient | None:
        """The stand-in for ``site``'s client (None: entente's own trainer)."""
        return self.clients[site]

    def call(self, method: str, site: str, args: tuple) -> Any:
        """Runs one call of ``site``'s client in the worker bound to it."""
        index, moved = self.binder.begin(site)
        try:
            if moved:
                builder = self.workers[self.binder.builders[site]]
                with builder.dropped_lock:
                    builder.dropped.append(site)
            return self.workers[index].call(method, site, args)
        finally:
            self.binder.end(index)

    def close(self) -> None:
        """Stops every worker."""
        for w in self.workers:
            w.stop()
