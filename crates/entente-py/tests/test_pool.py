"""How ``simulate(processes=N)`` places sites on worker processes (``entente._pool.Binder``):
bound at the first call to a free worker, the one that built the client if it is free, and
never moved afterwards."""

from __future__ import annotations

import threading

from entente._pool import Binder

#: Four sites dealt round-robin to two workers at start-up, as the pool deals them.
BUILDERS = {"a": 0, "b": 1, "c": 0, "d": 1}


def test_a_site_goes_to_its_builder_when_it_is_free():
    binder = Binder(BUILDERS, 2)
    assert binder.begin("a") == (0, False)
    assert binder.begin("b") == (1, False)


def test_a_site_whose_builder_is_busy_moves_to_a_free_worker():
    binder = Binder(BUILDERS, 2)
    assert binder.begin("a") == (0, False)
    # site c was built by worker 0, which is busy with a: worker 1 takes it.
    assert binder.begin("c") == (1, True)
    binder.end(0)
    # site b was built by worker 1, now busy with c: worker 0 takes it.
    assert binder.begin("b") == (0, True)


def test_a_bound_site_stays_with_its_worker():
    binder = Binder(BUILDERS, 2)
    assert binder.begin("a") == (0, False)
    assert binder.begin("c") == (1, True)
    binder.end(0)
    binder.end(1)
    # Both are free now; c was bound to worker 1 and stays there, even while it is busy.
    assert binder.begin("c") == (1, False)
    assert binder.begin("c") == (1, False)


def test_a_first_call_waits_for_a_free_worker():
    binder = Binder(BUILDERS, 2)
    binder.begin("a")
    binder.begin("b")
    taken: list[tuple[int, bool]] = []
    waiter = threading.Thread(target=lambda: taken.append(binder.begin("c")))
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive() and not taken, "c was bound while both workers were busy"
    binder.end(1)
    waiter.join(timeout=10)
    assert taken == [(1, True)]
