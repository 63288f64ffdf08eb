"""A pytest plugin: assert in your own test suite that a model does not leak, in the spirit of
pytest-memray's ``limit_leaks``. Installed with bisector (entry point ``pytest11``).

    def test_net_does_not_leak(bisector):
        bisector.assert_no_leak("models/net.py:Net", inputs=["x=B,3,H,W"], stages=["eager", "inference"])

    @pytest.mark.bisector_no_leak("models/net.py:Net", inputs=["x=B,3,H,W"], stages=["eager"])
    def test_net_forward():
        ...

Both measure the model in isolated probes (as ``bisector measure``) and fail with one message per
stage that leaks or grows per new shape (``fail_on``), with its figures; ``locate=True`` also
bisects the module tree and names the regions. Probes share one probe server per test session.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import pytest

MARKER = "bisector_no_leak"
_POOL: Any = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(spec, inputs=..., dims=..., stages=..., fail_on=('leak', 'shape-growth'), locate=False, **options): "
        "fail the test when bisector measures the model leaking in those stages",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL = None


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        from bisector.probe.pool import ProbePool

        _POOL = ProbePool(timeout_s=600)
    return _POOL


class MemoryCheck:
    """What the ``bisector`` fixture gives a test."""

    def measure(self, spec: str, inputs: Iterable[str] = (), dims: Iterable[str] = (), **options: Any) -> Any:
        from bisector import api
        from bisector.measure import measure

        p = api.prepare(spec, inputs, dims, **options)
        return measure(p.model, p.plan, p.options, pool=_pool())

    def assert_no_leak(
        self,
        spec: str,
        inputs: Iterable[str] = (),
        dims: Iterable[str] = (),
        *,
        fail_on: Iterable[str] = ("leak", "shape-growth"),
        locate: bool = False,
        **options: Any,
    ) -> Any:
        """Measure; raise AssertionError naming every stage whose verdict is in fail_on (or that
        crashed or could not run). Returns the report when the model passes."""
        from bisector.units import format_bytes

        report = self.measure(spec, inputs, dims, **options)
        fail_on = set(fail_on)
        problems = []
        for stage, r in report.stages.items():
            if r.kind in fail_on:
                v = r.verdict
                per = f"{format_bytes(v.growth_bytes_per_call, signed=True)}/call, {v.objects_per_call or 0:+.0f} objects/call"
                if r.kind == "shape-growth":
                    per = f"{format_bytes(v.growth_bytes_per_new_shape, signed=True)}/new shape"
                problems.append(f"{stage}: {r.kind} ({per}; baseline {format_bytes(v.baseline_bytes_per_call, signed=True)}/call)")
            elif r.kind in ("failed", "crashed"):
                problems.append(f"{stage}: {r.kind}: {getattr(r.failure, 'message', None) or r.failure.describe()}")
            elif r.kind == "inconclusive":
                warnings.warn(f"bisector: {spec} {stage} inconclusive (noise too high to tell)", stacklevel=2)
        if problems and locate:
            from bisector import api

            found = api.find(spec, inputs, dims, **options)
            problems += [f"culprit {c.region or '<root>'} ({c.stage} {c.kind}): {c.hint}" for c in found.culprits]
        if problems:
            raise AssertionError(f"{report.model.label} leaks:\n  " + "\n  ".join(problems))
        return report


@pytest.fixture
def bisector() -> MemoryCheck:
    """Assert that a model does not leak: ``bisector.assert_no_leak("net.py:Net", inputs=[...])``."""
    return MemoryCheck()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARKER):
        if not mark.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} needs the model spec, e.g. 'models/net.py:Net'")
        MemoryCheck().assert_no_leak(*mark.args, **mark.kwargs)
