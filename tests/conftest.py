from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    # One control cache for the whole session: tests share control runs, never the user's cache.
    if "BISECTOR_CACHE" not in os.environ:
        import tempfile

        os.environ["BISECTOR_CACHE"] = tempfile.mkdtemp(prefix="bisector-test-cache-")


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory):
    """One probe server for the session, preloading what every sample model imports (the
    Hugging Face samples' transformers costs ~7 s per probe otherwise)."""
    from bisector.probe.pool import ProbePool
    from bisector.spec import library_imports, parse_model_spec
    from bisector.zoo import zoo

    preload: list[str] = []
    for truth in zoo(SAMPLES):
        preload += library_imports(parse_model_spec(truth.target))
    with ProbePool(tmp_path_factory.mktemp("pool"), timeout_s=300, preload=tuple(dict.fromkeys(preload))) as p:
        yield p


def has_cuda() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - no driver means no GPU here
        return False


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 600) -> "subprocess.CompletedProcess[str]":
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "bisector", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
