"""Type stubs of the Rust extension module (see ``crates/entente-py/src``)."""

from collections.abc import Callable
from typing import Any

__version__: str

class EntenteError(RuntimeError):
    """A federation run could not start or stopped early; the message says why."""

def join(
    manifest: str,
    *,
    coordinator: str,
    site: str | None = None,
    client: Any | None = None,
    keys: str = "keys",
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    data: str | None = None,
    max_retries: int | None = None,
    audit_record: str | None = None,
) -> int: ...
def simulate(
    manifest: str,
    client_fn: Callable[[str], Any | None],
    *,
    out: str | None = None,
    overwrite: bool = False,
    rounds: int | None = None,
    quiet: bool = False,
    eval_data: str | None = None,
    threads: int | None = None,
    mlflow: str | None = None,
    target_accuracy: float | None = None,
) -> str: ...
def manifest_sites(manifest: str) -> list[str]: ...
def save_params(
    path: str, names: list[str], shapes: list[list[int]], blobs: list[bytes]
) -> None: ...
def load_params(path: str) -> list[tuple[str, list[int], bytes]]: ...
