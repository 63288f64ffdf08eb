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
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from bisector.judge.fail_on import DEFAULT as DEFAULT_FAIL_ON
from bisector.judge.fail_on import FailOn
from bisector.model.kinds import Kind

MARKER = "bisector_no_leak"
# The name the session's state registers under: the module itself is registered as "bisector"
# (its pytest11 entry point's name).
STATE_NAME = "bisector-state"


class BisectorPlugin:
    """The plugin's state for one pytest run, registered with the plugin manager (as pytest-memray
    does) rather than kept in module globals: the probe pool that every check shares, started on
    first use and closed when the session ends."""

    def __init__(self) -> None:
        self._pool: Any = None

    def pool(self) -> Any:
        if self._pool is None:
            from bisector.probe.pool import ProbePool

            self._pool = ProbePool(timeout_s=600)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.close()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        __tracebackhide__ = True  # a failure shows the verdict, not the plugin's source
        for mark in item.iter_markers(MARKER):
            if not mark.args:
                raise pytest.UsageError(f"@pytest.mark.{MARKER} needs the model spec, e.g. 'models/net.py:Net'")
            MemoryCheck(self.pool).assert_no_leak(*mark.args, **mark.kwargs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(spec, inputs=..., dims=..., stages=..., fail_on='leak,shape-growth:unbounded', locate=False, "
        "**options): "
        "fail the test when bisector measures the model leaking in those stages",
    )
    config.pluginmanager.register(BisectorPlugin(), STATE_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(STATE_NAME)
    if isinstance(plugin, BisectorPlugin):
        plugin.close()  # the session's end closed it already, unless the run stopped before
        config.pluginmanager.unregister(plugin, STATE_NAME)


def _state(config: pytest.Config) -> BisectorPlugin:
    plugin = config.pluginmanager.get_plugin(STATE_NAME)
    assert isinstance(plugin, BisectorPlugin), "bisector's pytest plugin is not configured"
    return plugin


class MemoryCheck:
    """What the ``bisector`` fixture gives a test."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool  # the session's probe pool, started when a check first needs it

    def measure(self, spec: str, inputs: Iterable[str] = (), dims: Iterable[str] = (), **options: Any) -> Any:
        from bisector import api
        from bisector.lab.measure import measure

        p = api.prepare(spec, inputs, dims, **options)
        return measure(p.model, p.plan, p.options, pool=self._pool())

    def assert_no_leak(
        self,
        spec: str,
        inputs: Iterable[str] = (),
        dims: Iterable[str] = (),
        *,
        fail_on: Iterable[str] | str = DEFAULT_FAIL_ON,
        locate: bool = False,
        **options: Any,
    ) -> Any:
        """Measure; raise AssertionError naming every stage whose verdict the fail_on policy lists
        (as `--fail-on` takes it: "leak,shape-growth:unbounded", or a list), or that crashed or could
        not run. Returns the report when the model passes. A failure's traceback hides this
        function (as pytest's own helpers do) and ends with the verdict, the culprit and the command
        that reproduces it."""
        __tracebackhide__ = True
        from bisector.common.units import format_bytes, per

        policy = FailOn.parse(fail_on)  # an unknown kind is an error here, not a silent pass
        report = self.measure(spec, inputs, dims, **options)
        problems = []
        for stage, r in report.stages.items():
            bounded = r.verdict.bounded if r.verdict is not None else None
            if r.kind in (Kind.LEAK, Kind.SHAPE_GROWTH, Kind.TOOLCHAIN_LEAK) and policy.fails(r.kind, bounded):
                v = r.verdict
                step = per(stage)
                figures = (
                    f"{format_bytes(v.growth_bytes_per_call, signed=True)}/{step}, "
                    f"{v.objects_per_call or 0:+.0f} objects/{step}"
                )
                if r.kind == Kind.SHAPE_GROWTH:
                    figures = f"{format_bytes(v.growth_bytes_per_new_shape, signed=True)}/new shape"
                baseline = format_bytes(v.baseline_bytes_per_call, signed=True)
                problems.append(f"{stage}: {r.kind} ({figures}; baseline {baseline}/{step})")
            elif r.kind in (Kind.FAILED, Kind.CRASHED):
                problems.append(f"{stage}: {r.kind}: {getattr(r.failure, 'message', None) or r.failure.describe()}")
            elif r.kind == Kind.INCONCLUSIVE and policy.fails(Kind.INCONCLUSIVE):
                problems.append(f"{stage}: inconclusive (noise too high to tell)")
            elif r.kind == Kind.INCONCLUSIVE:
                warnings.warn(f"bisector: {spec} {stage} inconclusive (noise too high to tell)", stacklevel=2)
        if not problems:
            return report
        command = reproduce_command(spec, inputs, dims, report.stages, fail_on)
        culprit = f"not located (locate=True names it, or: {command.replace(' measure ', ' find ', 1)})"
        if locate:
            from bisector import api

            found = api.find(spec, inputs, dims, **options)
            named = [f"{c.region or '<root>'} ({c.stage} {c.kind}): {c.hint}" for c in found.culprits]
            culprit = "; ".join(named) or "no region below the root misbehaves alone"
        lines = [*problems, f"verdict: {report.verdict}", f"culprit: {culprit}", f"reproduce: {command}"]
        raise AssertionError(f"{report.model.label} leaks:\n  " + "\n  ".join(lines))


def reproduce_command(
    spec: str, inputs: Iterable[str], dims: Iterable[str], stages: Iterable[str], fail_on: Iterable[str] | str
) -> str:
    """The `bisector measure` command line that measures what the check measured."""
    import shlex

    words = ["bisector", "measure", spec]
    words += [w for i in inputs for w in ("--input", i)]
    words += [w for d in dims for w in ("--dim", d)]
    words += [w for s in stages for w in ("--stage", s)]
    policy = fail_on if isinstance(fail_on, str) else ",".join(fail_on)
    if policy != ",".join(DEFAULT_FAIL_ON):
        words += ["--fail-on", policy]
    return shlex.join(words)


@pytest.fixture
def bisector(request: pytest.FixtureRequest) -> MemoryCheck:
    """Assert that a model does not leak: ``bisector.assert_no_leak("net.py:Net", inputs=[...])``."""
    return MemoryCheck(_state(request.config).pool)
