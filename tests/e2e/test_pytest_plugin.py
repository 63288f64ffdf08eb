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
    assert "culprit: blocks.1 (eager leak)" in text and text.splitlines()[-1].startswith("  reproduce: ")


@pytest.mark.bisector_no_leak(CLEAN, inputs=["x=B,3,H,W"], dims=["B=1:4", "H=8:32", "W=8:32"], stages=["eager"])
def test_marker_passes_on_a_clean_model() -> None:
    pass


def test_a_failure_is_short_and_ends_with_verdict_culprit_and_command(pytester) -> None:
    """Issue 25: a failing check printed ~60 lines of the plugin's source before the one that
    mattered. Its frames are hidden now; each failure is under 15 lines and ends with the verdict,
    the culprit and the command that reproduces it. Both ways in: the marker and the fixture."""
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.bisector_no_leak({LEAKY!r}, inputs=["x=B,32"], stages=["eager"])
        def test_marked():
            pass

        def test_fixture(bisector):
            bisector.assert_no_leak({LEAKY!r}, ["x=B,32"], stages=["eager"])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "pytest_plugin.py" not in out and "def assert_no_leak" not in out
    sections = out.split("_ test_")[1:]  # each failure's section starts with its "___ test_x ___" header
    assert len(sections) == 2
    for section in sections:
        body = section.split("short test summary")[0].split("\n_")[0].strip().splitlines()
        assert len(body) < 15, "\n".join(body)
        said = [line.strip().removeprefix("E").strip() for line in body]
        at = said.index("verdict: leak")  # the error's last three lines
        assert said[at + 1].startswith("culprit: not located"), body
        assert said[at + 2].startswith("reproduce: bisector measure ") and "--stage eager" in said[at + 2], body
    result.stdout.fnmatch_lines(["*list_append.py:Net leaks*", "*eager: leak*"])


def test_the_plugins_state_is_a_registered_plugin_object_for_the_run(pytester) -> None:
    from bisector import pytest_plugin

    assert not hasattr(pytest_plugin, "_POOL")  # no module globals: one state per pytest run
    config = pytester.parseconfigure()
    state = config.pluginmanager.get_plugin(pytest_plugin.STATE_NAME)
    assert isinstance(state, pytest_plugin.BisectorPlugin) and state._pool is None  # the pool starts on first use
    config._ensure_unconfigure()
    assert config.pluginmanager.get_plugin(pytest_plugin.STATE_NAME) is None
