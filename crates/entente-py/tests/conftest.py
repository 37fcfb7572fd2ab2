"""Test setup: quiet TensorFlow, seed the frameworks, and the shared fixtures.

The suite tests the *installed* ``entente`` package (build and install it first, see
``test.sh``). The federation on disk and the clients live in ``helpers.py``, which the
deployment tests' subprocesses import too; the deployment fixtures start the ``entente``
binary (``$ENTENTE_BIN``, else the shared release build, else ``<repo>/target/release``) and
kill every process they started when the test ends, whether it passed or not.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# Before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import helpers  # noqa: E402
import pytest  # noqa: E402

try:
    import torch

    # torch._dynamo, which a torch optimizer imports on first use, imports triton, whose
    # library bundles its own LLVM; loaded after TensorFlow's LLVM, it aborts the process
    # ("LLVM ERROR: inconsistency in registered CommandLine options"). Loaded first, both work.
    import torch._dynamo  # noqa: F401

    torch.set_num_threads(1)
    torch.manual_seed(0)
except ImportError:  # the tests that need torch skip themselves
    torch = None

#: How long a deployment may take before the test gives up on it (it takes seconds).
DEPLOY_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def entente_bin() -> Path:
    found = helpers.entente_bin()
    if found is None:
        pytest.skip(
            "no entente binary: set ENTENTE_BIN, or build it (cargo build --release -p entente)"
        )
    return found


@pytest.fixture
def federation(tmp_path):
    """``make(**terms)``: the digits federation in ``tmp_path``, returns its manifest."""

    def make(**terms) -> Path:
        return helpers.write_federation(tmp_path, **terms)

    return make


@pytest.fixture(scope="session")
def keys(entente_bin, tmp_path_factory) -> Path:
    """The federation's CA, the coordinator's certificate for 127.0.0.1 and each site's."""
    folder = tmp_path_factory.mktemp("keys") / "keys"
    commands = [
        ["keys", "init", "--federation", helpers.FEDERATION, "--dir", str(folder)],
        ["keys", "issue", "--coordinator", "127.0.0.1", "--dir", str(folder)],
        *(["keys", "issue", site, "--dir", str(folder)] for site in helpers.SITES),
    ]
    for command in commands:
        subprocess.run([str(entente_bin), *command], check=True, capture_output=True, timeout=60)
    return folder


SITE_SCRIPT = """\
import signal
import sys

# An interactive terminal's Ctrl-C: Python turns SIGINT into KeyboardInterrupt unless its
# parent started it with SIGINT ignored (as a non-interactive shell does for `cmd &`).
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})

import entente
import helpers

kind, folder, site, coordinator, keys = sys.argv[1:6]
max_retries = None if sys.argv[6] == "none" else int(sys.argv[6])
client = helpers.make_client(kind, helpers.Path(folder), site)
print("joining", flush=True)
rounds = entente.join(
    helpers.Path(folder) / "federation.toml",
    coordinator=coordinator,
    site=site,
    client=client,
    keys=keys,
    max_retries=max_retries,
)
print(f"{{site}}: the run is finished after {{rounds}} rounds", flush=True)
"""


class Process:
    """A started process whose output goes to files, so that no pipe ever fills up."""

    def __init__(self, name: str, args: list[str], folder: Path, cwd: Path) -> None:
        self.name = name
        self.stdout_path = folder / f"{name}.stdout"
        self.stderr_path = folder / f"{name}.stderr"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.popen = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"--- {self.name} (exit {self.popen.poll()})\n"
            f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
        )

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """Waits until the process's stdout matches ``pattern``; fails if it ends first."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.stdout)
            if found:
                return found
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} ended before printing {pattern!r}\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} printed no {pattern!r} in {timeout} s\n{self.describe()}")
            time.sleep(0.05)

    def wait(self, timeout: float, others: list[Process] = ()) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            report = "\n".join(p.describe() for p in [self, *others])
            pytest.fail(f"{self.name} still running after {timeout} s\n{report}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Deployment:
    """A coordinator and nodes on loopback, all as subprocesses of the test."""

    def __init__(self, folder: Path, entente_bin: Path, keys: Path) -> None:
        self.folder = folder
        self.bin = entente_bin
        self.keys = keys
        self.processes: list[Process] = []
        self.coordinator: str | None = None
        self.script = folder / "site_node.py"
        self.script.write_text(SITE_SCRIPT.format(tests=str(helpers.TESTS)))

    def start(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.folder, cwd=self.folder)
        self.processes.append(process)
        return process

    def serve(self, *, heartbeat_secs: float = 1.0, wait_secs: float = 60.0) -> Process:
        """``entente serve`` on an OS-chosen port; returns once it listens."""
        serve = self.start(
            "serve",
            [
                str(self.bin),
                "serve",
                str(self.folder / "federation.toml"),
                "--listen",
                "127.0.0.1:0",
                "--keys",
                str(self.keys),
                "--heartbeat-secs",
                str(heartbeat_secs),
                "--wait-secs",
                str(wait_secs),
                "--out",
                str(self.model_path),
            ],
        )
        port = serve.wait_for(r"listening on 127\.0\.0\.1:(\d+) \(mutual TLS\)", 60).group(1)
        self.coordinator = f"https://127.0.0.1:{port}"
        return serve

    @property
    def model_path(self) -> Path:
        return self.folder / "model.safetensors"

    def join_rust(self, site: str) -> Process:
        """entente's own node and trainer (``entente join``) on the site's own CSV."""
        return self.start(
            f"join-{site}",
            [
                str(self.bin),
                "join",
                str(self.folder / "federation.toml"),
                "--coordinator",
                self.coordinator,
                "--site",
                site,
                "--keys",
                str(self.keys),
            ],
        )

    def join_python(
        self,
        site: str,
        kind: str,
        *,
        coordinator: str | None = None,
        max_retries: int | None = 20,
    ) -> Process:
        """A Python process running ``entente.join`` with the ``helpers`` client ``kind``."""
        return self.start(
            f"{kind}-{site}",
            [
                sys.executable,
                str(self.script),
                kind,
                str(self.folder),
                site,
                coordinator or self.coordinator,
                str(self.keys),
                "none" if max_retries is None else str(max_retries),
            ],
        )

    def wait_all(self, timeout: float = DEPLOY_TIMEOUT) -> dict[str, int]:
        """Waits for every process; returns their exit codes by name."""
        deadline = time.monotonic() + timeout
        codes = {}
        for process in self.processes:
            others = [p for p in self.processes if p is not process]
            codes[process.name] = process.wait(max(deadline - time.monotonic(), 1.0), others)
        return codes

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.processes)

    def audit(self) -> str:
        shown = subprocess.run(
            [str(self.bin), "audit", "show", str(self.folder / "federation.toml")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.folder,
        )
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    def close(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                # A node stopped politely first; whatever is left is killed.
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
            process.kill()


@pytest.fixture
def deployment(tmp_path, entente_bin, keys):
    """A :class:`Deployment` in ``tmp_path``; every process it started is killed afterwards."""
    deployed = Deployment(tmp_path, entente_bin, keys)
    try:
        yield deployed
    finally:
        deployed.close()
