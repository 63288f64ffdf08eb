"""Every model's edits composed into one patch per file, proven on the project.

Per file, ``<out>/patches/<path>.patch``: one git-style diff holding every model's edits to that
file (so patches of models sharing a serving script compose), all of them in ``<out>/all.patch``.
They are proven with the project's check (fix/project_check.py) in a shadow copy when the manifest
names one (`check = "python serve/serve.py"`): a model whose edits make it fail (and the original
passes) is left out, and its result says why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.common.project import project_root
from bisector.fix.project_check import CHECK_TIMEOUT_S, Prover
from bisector.patching.from_report import ModelWork, compose
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.results import ERROR, UNFIXED, ModelResult

# compose's answer over some models: the patches, each model's notes and the files it edits (by work key).
Composed = tuple[list[Any], dict[str, list[str]], dict[str, list[str]]]


def write_patches(
    models: list[ModelEntry], results: dict[str, ModelResult], works: Mapping[str, ModelWork], out: Path
) -> dict[str, ModelResult]:
    """Every model's edits composed into one patch per file and proven (see above); the results
    updated with the patches that hold each model's edits and the check's state. Patches of an
    earlier run are replaced; no patch is an empty file."""
    _remove_old_patches(models, out)
    active = [e for e in models if e.name in works and results[e.name].status != ERROR]
    if not active:
        return results
    root = project_root(Path(models[0].base))
    check = next((e.options.get("check") for e in models if e.options.get("check")), None)
    timeout = next((e.options.get("check_timeout") for e in models if e.options.get("check_timeout")), None)
    prover = Prover(root, check, float(timeout or CHECK_TIMEOUT_S), what="the patches")

    def build(entries: list[ModelEntry]) -> Composed:
        return compose([works[e.name] for e in entries], root)

    (patches, notes, files), check_state, refused = _proven(active, build, prover)
    names = _write(patches, out)
    updated = dict(results)
    by_key = {works[e.name].key: e for e in active}  # models sharing an artifact: the last one's row
    for key, e in by_key.items():
        mine = tuple(names[f] for f in files.get(key, []) if f in names)
        why = refused.get(e.name)
        updated[e.name] = _with_patches(results[e.name], mine, notes.get(key, []), check_state, why, out / "patches")
    return updated


def _proven(
    active: list[ModelEntry], build: Callable[[list[ModelEntry]], Composed], prover: Prover
) -> tuple[Composed, str, dict[str, str]]:
    """The patches that may be offered, the check's state for them, and each refused model's state.
    When all of them together fail the check, each model's are tried alone and the rest offered."""
    composed = build(active)
    check_state = "passed" if prover.check else "not run against your script"
    if not composed[0]:
        return composed, check_state, {}
    ok, check_state = prover(composed[0])
    if ok:
        return composed, check_state, {}
    refused: dict[str, str] = {}
    keep = []
    for e in active:
        alone = build([e])[0]
        good, state = prover(alone) if alone else (True, "")
        if good:
            keep.append(e)
        else:
            refused[e.name] = state
    composed = build(keep)
    ok, state = prover(composed[0]) if composed[0] else (True, check_state)
    if not ok:
        return ([], {}, {}), check_state, {**refused, **{e.name: state for e in keep}}
    return composed, state, refused


def _with_patches(
    r: ModelResult, mine: tuple[str, ...], notes: list[str], state: str, refused: str | None, patch_dir: Path
) -> ModelResult:
    """The model's row with its patches and the check's state, or why its edits are not offered."""
    note = "; ".join(x for x in [r.error, *notes] if x)
    if refused is not None:
        return replace(
            r,
            status=UNFIXED if r.culprits else r.status,
            patches=(),
            check=refused,
            error="; ".join(x for x in [note, "patch not offered: the project's check fails with it"] if x),
        )
    patch = str(patch_dir / mine[0]) if mine else None
    return replace(r, patches=mine, check=state if mine else "no patch", error=note, patch=patch)


def _remove_old_patches(models: list[ModelEntry], out: Path) -> None:
    patch_dir = out / "patches"
    if patch_dir.exists():
        for old in patch_dir.glob("*.patch"):
            old.unlink()
    (out / "all.patch").unlink(missing_ok=True)
    for entry in models:  # per-model patches of older versions: they would not compose
        (out / f"{entry.name}.patch").unlink(missing_ok=True)


def _write(patches: list[Any], out: Path) -> dict[str, str]:
    """Each file's patch written; the patch's name by the resolved path of the file it changes."""
    patch_dir = out / "patches"
    patch_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for p in patches:
        names[str(Path(p.path).resolve())] = patch_name(p.rel)
        # bytes: each file's own line endings and encoding, so the patch applies (text would lose a "\r")
        (patch_dir / names[str(Path(p.path).resolve())]).write_bytes(p.diff_bytes)
    if patches:
        (out / "all.patch").write_bytes(b"".join(p.diff_bytes for p in patches))
    return names


def patch_name(rel: str) -> str:
    return rel.replace("/", "__").replace("\\", "__") + ".patch"
