"""A patch is proven on the user's project before it is offered: patched files compile, and the
project's check command runs with them in a shadow copy, the original run as the reference."""

from __future__ import annotations

from pathlib import Path

from bisector.fix.project_check import prove
from bisector.patching.diff import Patch


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "serve").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (root / "serve" / "serve.py").write_text("print('served')\n")
    return root


def patch(root: Path, after: str) -> Patch:
    path = root / "serve" / "serve.py"
    return Patch(str(path), path.read_text(), after, "settings", str(root))


def test_a_patch_that_breaks_the_check_is_not_offered_and_says_why(tmp_path: Path) -> None:
    root = project(tmp_path)
    ok, state = prove(root, "python serve/serve.py", [patch(root, "raise RuntimeError('unexpected input dtype')\n")])
    assert not ok and state.startswith("failed: `python serve/serve.py` exited 1") and "unexpected input dtype" in state
    assert (root / "serve" / "serve.py").read_text() == "print('served')\n"  # run in a shadow copy


def test_a_patch_that_keeps_the_check_passing_is_offered(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert prove(root, "python serve/serve.py", [patch(root, "print('served, bounded')\n")]) == (True, "passed")


def test_without_a_check_the_patch_is_compiled_and_marked_not_run(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert prove(root, None, [patch(root, "print('x')\n")]) == (True, "not run against your script")
    ok, state = prove(root, None, [patch(root, "def broken(:\n")])
    assert not ok and "serve/serve.py does not compile" in state


def test_a_check_that_fails_without_the_patch_proves_nothing(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "serve" / "serve.py").write_text("raise SystemExit(3)\n")
    ok, state = prove(root, "python serve/serve.py", [patch(root, "raise SystemExit(3)\nprint(1)\n")])
    assert ok and state.startswith("not proven: `python serve/serve.py` fails without the patch too")


def test_bad_manifest_keys_are_one_line_user_errors(tmp_path: Path) -> None:
    import pytest

    from bisector.common.errors import UserError
    from bisector.repairs.manifest import load_models

    manifest = tmp_path / "models.toml"
    # The manifest schema (config.py) words them, naming the entry and the key.
    for bad, word in (
        ('pick = "two"', r"pick: expected a whole number"),
        ("check = 3", r"check: expected a string"),
        ("prefer = [1]", r"prefer: expected a string"),
    ):
        manifest.write_text(f'[[models]]\nspec = "m.py:Net"\n{bad}\n')
        with pytest.raises(UserError, match=word):
            load_models(manifest=str(manifest))


def test_a_manifest_model_outside_its_project_is_refused_before_any_probe(tmp_path: Path) -> None:
    # Its patch named the file a//<absolute path>, which `git apply` rejects (issue 19, item 8b).
    import pytest

    from bisector.common.errors import UserError
    from bisector.repairs.manifest import load_models

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "m.py").write_text("class Net: pass\n")
    (tmp_path / "p" / "inside.py").write_text("class Net: pass\n")
    manifest = tmp_path / "p" / "models.toml"
    manifest.write_text('[[models]]\nspec = "inside.py:Net"\n[[models]]\nspec = "../outside/m.py:Net"\n')
    with pytest.raises(UserError, match=r"model entry 2 \(\.\./outside/m\.py:Net\): .* is outside the project"):
        load_models(manifest=str(manifest))
    manifest.write_text('[[models]]\nspec = "inside.py:Net"\n')
    assert [e.label for e in load_models(manifest=str(manifest))] == ["inside.py:Net"]
