"""entente.join in real deployments on loopback: ``entente serve`` as the coordinator, each
site in its own process (Python nodes running ``entente.join`` with a client from
``helpers``, and entente's own node, ``entente join``), over mutual TLS.

The ``deployment`` fixture kills every process a test started, whether it passed or not.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import helpers
import numpy as np
import pytest

import entente

pytest.importorskip("torch")

#: A stopped node must be gone within this many seconds of Ctrl-C.
STOP_WITHIN = 15.0


def round_lines(serve_output: str) -> list[str]:
    return re.findall(r"^round +\d+/\d+: .*$", serve_output, flags=re.MULTILINE)


def assert_finished(deployment, codes, rounds):
    """Every process exited 0; the Python nodes printed the round count."""
    report = deployment.describe()
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{report}"
    for process in deployment.processes:
        if process.name.startswith("join-"):
            assert f"the run is finished after {rounds} rounds" in process.stdout, report
        elif process.name != "serve":
            site = process.name.split("-", 1)[1]
            assert f"{site}: the run is finished after {rounds} rounds" in process.stdout, report
    lines = round_lines(deployment.processes[0].stdout)
    assert len(lines) == rounds, report
    for line in lines:
        assert "3 of 3 sites accepted" in line, report
    assert "left out" not in deployment.processes[0].stdout, report


def test_torch_keras_and_rust_sites_under_secure_aggregation(federation, deployment):
    pytest.importorskip("keras")
    federation(rounds=2, secure=True)
    serve = deployment.serve(wait_secs=90)
    deployment.join_python("site-a", "torch")
    deployment.join_python("site-b", "keras")
    deployment.join_rust("site-c")
    codes = deployment.wait_all()
    assert_finished(deployment, codes, rounds=2)
    assert "final model" in serve.stdout

    init = entente.load_params(deployment.folder / "init.safetensors")
    model = entente.load_params(deployment.model_path)
    assert list(model) == list(init)
    assert {n: v.shape for n, v in model.items()} == {n: v.shape for n, v in init.items()}
    for name in init:
        assert np.isfinite(model[name]).all(), name
        assert not np.array_equal(model[name], init[name]), name
    # It learned something on the sites' own records (about 0.9 after 2 rounds).
    x, y = helpers.read_csv(deployment.folder / "central.csv")
    assert helpers.accuracy(init, x, y) < 0.3
    assert helpers.accuracy(model, x, y) > 0.6
    audit = deployment.audit()
    assert len(re.findall(r"update_accepted .* site site-[abc] ", audit)) == 6


def test_a_flower_numpy_client_joins_a_deployment(federation, deployment):
    pytest.importorskip("flwr")
    federation(rounds=2)
    deployment.serve(wait_secs=90)
    deployment.join_python("site-a", "flower")
    deployment.join_rust("site-b")
    deployment.join_rust("site-c")
    codes = deployment.wait_all()
    assert_finished(deployment, codes, rounds=2)
    model = entente.load_params(deployment.model_path)
    assert list(model) == list(helpers.LAYOUT)


def test_heartbeats_go_on_while_python_trains(federation, deployment):
    # Three missed heartbeats (0.9 s) and a node counts as gone; fit takes over 2.5 s.
    federation(rounds=2)
    serve = deployment.serve(heartbeat_secs=0.3, wait_secs=90)
    slow = deployment.join_python("site-a", "slow")
    deployment.join_rust("site-b")
    deployment.join_rust("site-c")
    codes = deployment.wait_all()
    assert_finished(deployment, codes, rounds=2)
    for line in round_lines(serve.stdout):
        seconds = float(re.search(r"([\d.]+) s$", line).group(1))
        assert seconds >= 2.5, line  # the slow fit was in the round
    audit = deployment.audit()
    accepted = re.findall(r"update_accepted +run \d+ +round (\d+) +site site-a ", audit)
    assert accepted == ["1", "2"], audit
    assert "lost contact" not in audit + serve.stdout + serve.stderr, audit
    assert slow.popen.returncode == 0


def _interrupt(process, marker):
    process.wait_for(re.escape(marker), timeout=60)
    time.sleep(0.5)
    sent = time.monotonic()
    process.popen.send_signal(signal.SIGINT)
    try:
        code = process.popen.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_WITHIN} s after Ctrl-C\n{process.describe()}")
    return code, time.monotonic() - sent


def test_ctrl_c_stops_a_node_inside_fit(federation, deployment):
    federation(rounds=2, min_sites=1)
    deployment.serve(wait_secs=0.5)
    node = deployment.join_python("site-a", "blocking")
    code, took = _interrupt(node, helpers.BlockingClient.MARKER)
    assert code != 0, node.describe()
    assert "KeyboardInterrupt" in node.stderr, node.describe()
    assert "the run is finished" not in node.stdout
    assert took < STOP_WITHIN


def test_ctrl_c_stops_a_node_waiting_for_its_coordinator(federation, deployment):
    federation(rounds=2, min_sites=1)
    node = deployment.join_python(
        "site-a", "blocking", coordinator="https://127.0.0.1:1", max_retries=None
    )
    code, took = _interrupt(node, "joining")
    assert code != 0, node.describe()
    assert "KeyboardInterrupt" in node.stderr, node.describe()
    assert helpers.BlockingClient.MARKER not in node.stdout
    assert took < STOP_WITHIN


def test_a_node_gives_up_after_max_retries(federation, deployment):
    federation(rounds=2, min_sites=1)
    node = deployment.join_python(
        "site-a", "blocking", coordinator="https://127.0.0.1:1", max_retries=2
    )
    code = node.wait(timeout=60)
    assert code == 1, node.describe()
    assert "EntenteError" in node.stderr, node.describe()
