"""The corpus from the wild (tests/corpus/, issue 20): every pattern says where it comes from and
what must be true of it, and its feature check holds on the model as written (so a check that
fails after a patch means the patch took the feature away, not that the check was wrong).

bench/corpus.py runs find and fix over all of them; here one pattern is fixed end to end."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bisector.model.zoo import zoo
from tests.corpus.behaviour import run_behaviour, run_behaviours

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
TRUTHS = zoo(CORPUS)
KINDS = {"leak", "shape-growth"}


def test_the_corpus_has_thirty_patterns_of_many_kinds() -> None:
    assert len(TRUTHS) >= 30
    patterns = {t.extra["pattern"] for t in TRUTHS}
    assert len(patterns) >= 20, patterns
    kinds = {c["kind"] for t in TRUTHS for c in t.culprits}
    assert kinds == KINDS
    # Roots the issue names: containers on self and at module level, memos and lru_cache, hooks,
    # logging, tensor banks, growing ModuleList/ParameterList, mutable defaults, class-level
    # registries, closures, caches keyed by shape, dtype and device.
    text = " ".join(sorted(patterns))
    for word in (
        "hook",
        "lru_cache",
        "module-level",
        "logging",
        "torch.cat",
        "ModuleList",
        "ParameterList",
        "mutable default",
        "class-level",
        "closure",
        "shape",
        "dtype",
    ):
        assert word in text, word


@pytest.mark.parametrize("truth", TRUTHS, ids=lambda t: t.name)
def test_each_pattern_says_where_it_comes_from_and_what_must_hold(truth) -> None:
    doc = ast.get_docstring(ast.parse(Path(truth.path).read_text())) or ""
    assert re.search(r"Provenance: https://\S+", doc), "a provenance line with the address"
    assert truth.stages and set(truth.stages.values()) <= KINDS
    assert truth.culprits and all(set(c) == {"region", "stage", "kind"} for c in truth.culprits)
    assert truth.extra.get("behaviour") and truth.extra.get("pattern")
    # Flags a user runs this pattern with (bench/corpus.py passes them): real options only.
    for flag in truth.extra.get("flags", ()):
        assert flag in {"--keep-autograd", "--tracemalloc", "--exporter"}, flag


def test_every_feature_check_holds_on_the_unpatched_models() -> None:
    results = run_behaviours([(t.path, t) for t in TRUTHS])
    failed = {t.name: why for t, why in zip(TRUTHS, results) if why}
    assert not failed


def test_a_feature_check_catches_a_patch_that_deletes_the_feature(tmp_path: Path) -> None:
    (truth,) = [t for t in TRUTHS if t.name == "deque_no_maxlen"]
    model = tmp_path / "deque_no_maxlen.py"
    model.write_text(Path(truth.path).read_text().replace("        self.recent.append(y.detach().norm())\n", ""))
    ok, why = run_behaviour(model, truth)
    assert not ok and "AssertionError" in why


@pytest.mark.probe
def test_fix_bounds_a_deque_without_taking_its_reader_away(tmp_path: Path) -> None:
    """The kept fix's patch is applied (fix --apply in a copy) and the feature check still holds."""
    (truth,) = [t for t in TRUTHS if t.name == "deque_no_maxlen"]
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'copy'\n")
    model = tmp_path / "deque_no_maxlen.py"
    shutil.copy(truth.path, model)
    args = [sys.executable, "-m", "bisector", "fix", f"{model}:Net", "-i", "x=B,16", "-d", "B=1:4", "-s", "eager"]
    done = subprocess.run([*args, "--apply"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    changed = model.read_text() != Path(truth.path).read_text()
    if changed:
        ok, why = run_behaviour(model, truth)
        assert ok, f"the patch took the feature away: {why}\n{model.read_text()}"
    else:
        assert "only fixes that remove behaviour" in done.stdout + done.stderr
