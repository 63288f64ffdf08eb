"""The pytest plugin, used here on a clean and a leaking sample as a user's suite would use it."""

from __future__ import annotations

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.probe
CLEAN = str(SAMPLES / "clean_cnn.py") + ":Net"
LEAKY = str(SAMPLES / "list_append.py") + ":Net"


def test_clean_model_passes(bisector) -> None:
    report = bisector.assert_no_leak(CLEAN, ["x=B,3,H,W"], ["B=1:4", "H=8:32", "W=8:32"], stages=["eager"])
    assert report.stages["eager"].kind == "clean"


def test_leaking_model_fails_naming_the_stage_and_the_region(bisector) -> None:
    with pytest.raises(AssertionError) as exc:
        bisector.assert_no_leak(LEAKY, ["x=B,32"], stages=["eager"], locate=True)
    text = str(exc.value)
    assert "list_append.py:Net leaks" in text and "eager: leak" in text and "+1 objects/call" in text
    assert "culprit blocks.1 (eager leak)" in text


@pytest.mark.bisector_no_leak(CLEAN, inputs=["x=B,3,H,W"], dims=["B=1:4", "H=8:32", "W=8:32"], stages=["eager"])
def test_marker_passes_on_a_clean_model() -> None:
    pass


def test_marker_fails_a_test_on_a_leaking_model(pytester) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.bisector_no_leak({LEAKY!r}, inputs=["x=B,32"], stages=["eager"])
        def test_model():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*list_append.py:Net leaks*", "*eager: leak*"])


def test_the_plugins_state_is_a_registered_plugin_object_for_the_run(pytester) -> None:
    from bisector import pytest_plugin

    assert not hasattr(pytest_plugin, "_POOL")  # no module globals: one state per pytest run
    config = pytester.parseconfigure()
    state = config.pluginmanager.get_plugin(pytest_plugin.STATE_NAME)
    assert isinstance(state, pytest_plugin.BisectorPlugin) and state._pool is None  # the pool starts on first use
    config._ensure_unconfigure()
    assert config.pluginmanager.get_plugin(pytest_plugin.STATE_NAME) is None
