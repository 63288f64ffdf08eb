"""From a fix report to patches: what the chosen kept fix of every culprit (judge/choice.py)
changes for one model (ModelWork), and several models' changes composed into one patch per file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bisector.fixers.base import SourceEdit
from bisector.judge.choice import best_fixes
from bisector.model.spec import InputPlan, ModelSpec
from bisector.patching.diff import Patch, source_patches
from bisector.patching.export_script import patch_export_script, script_input_names, unread_export
from bisector.patching.infer_script import patch_infer_script
from bisector.patching.new_file import new_export_file
from bisector.patching.settings import Settings


@dataclass(frozen=True)
class ModelWork:
    """What one model's chosen fixes change, before it is composed with other models' into one
    patch per file: source edits, and settings for the export and serving scripts."""

    key: str  # the model's name in shared scripts (its artifact: `<key>.onnx`)
    edits: tuple[Any, ...]
    probes: tuple[Mapping[str, Any], ...]  # the chosen fixes' probe overrides
    exporter: str | None  # as measured, when no fix chose one
    plan: Any
    model: Any
    export_script: str | None = None
    infer_script: str | None = None

    @property
    def settings(self) -> Settings:
        s = Settings.from_probes(self.probes)
        return replace(s, exporter=s.exporter or self.exporter)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "edits": [{"path": e.path, "before": e.before, "after": e.after, "summary": e.summary} for e in self.edits],
            "probes": [dict(p) for p in self.probes],
            "exporter": self.exporter,
            "plan": self.plan.to_json() if self.plan is not None else None,
            "model": self.model.to_json(),
            "export_script": self.export_script,
            "infer_script": self.infer_script,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelWork:

        return cls(
            data["key"],
            tuple(SourceEdit(**e) for e in data["edits"]),
            tuple(data["probes"]),
            data.get("exporter"),
            InputPlan.from_json(data["plan"]) if data.get("plan") else None,
            ModelSpec.from_json(data["model"]),
            data.get("export_script"),
            data.get("infer_script"),
        )


def work_for(
    report: Any,
    key: str,
    export_script: str | None = None,
    infer_script: str | None = None,
    pick: int | None = None,
    prefer: str | None = None,
) -> ModelWork:
    chosen = best_fixes(report, pick, prefer)
    # Export as the run measured: an exporter chosen with --exporter (or read from the export
    # script) goes into every export call written; None means torch's own default.
    measured = getattr(getattr(report.find.measure, "options", None), "probe", None)
    plan = report.find.measure.plan
    if export_script and plan is not None and not plan.use_hook:
        # The graph's inputs carry the names the user's export gives them: dynamic_axes, the
        # guard and the padding must use those, not --input's.
        names = script_input_names(export_script, key)
        if names and len(names) == len(plan.inputs):
            plan = replace(plan, inputs=tuple(replace(spec, name=n) for spec, n in zip(plan.inputs, names)))
    return ModelWork(
        key,
        tuple(e for ev in chosen for e in ev.edits),
        tuple(dict(ev.probe) for ev in chosen),
        getattr(measured, "exporter", None),
        plan,
        report.find.measure.model,
        export_script,
        infer_script,
    )


def compose(
    works: Sequence[ModelWork], root: str | Path, new_file: str = "export_onnx.py"
) -> tuple[list[Patch], dict[str, list[str]], dict[str, list[str]]]:
    """One patch per file holding every model's edits to it: model sources merged, then each
    shared script transformed model after model (each edit idempotent per setting, so the order
    only decides where lines go). Returns the patches, notes per model key, and per model key the
    files its edits are in."""

    root = str(Path(root).resolve())
    notes: dict[str, list[str]] = {w.key: [] for w in works}
    files: dict[str, list[str]] = {w.key: [] for w in works}
    patches, src_notes = source_patches([e for w in works for e in w.edits], root)
    for w in works:
        for e in w.edits:
            files[w.key].append(str(Path(e.path).resolve()))
        notes[w.key] += [n for n in src_notes if any(Path(e.path).name in n and e.summary in n for e in w.edits)]
    texts: dict[str, tuple[str, str]] = {}  # path -> (original, current)
    need_file: list[ModelWork] = []
    for w in works:
        notes[w.key] += _unread(w)
        if not w.probes and not w.edits:
            continue  # nothing chosen for this model: its scripts stay as they are
        s = w.settings
        scripts = (
            (s.export_related, w.export_script, patch_export_script),
            (s.runtime_related, w.infer_script, patch_infer_script),
        )
        for related, script, fn in scripts:
            if not related:
                continue
            if not script:
                need_file.append(w)
                continue
            path = str(Path(script).resolve())
            original, current = texts.get(path, (None, None))
            p, n = fn(path, s, w.plan, root, w.key, current)
            texts[path] = (p.before if original is None else original, p.after)  # type: ignore[assignment]
            notes[w.key] += n
            if p.after != (current if current is not None else p.before):
                files[w.key].append(path)
            if n and p.after == (current if current is not None else p.before) and "instead" in " ".join(n):
                need_file.append(w)
    for path, (original, current) in texts.items():
        keys = ", ".join(w.key for w in works if path in files[w.key])
        patches.append(Patch.of_file(path, original, current, "settings for " + keys, root))
    for w in {w.key: w for w in need_file}.values():  # ModelWork holds dicts: dedupe by key
        name = new_file if len(works) == 1 else f"export_{w.key}.py"
        p = new_export_file(root, w.model, w.plan, w.settings, name)
        patches.append(p)
        files[w.key].append(p.path)
    for k in files:
        files[k] = list(dict.fromkeys(files[k]))
    return [p for p in patches if p.changed], notes, files


def _unread(w: ModelWork) -> list[str]:
    """A note when the export script passes this model settings the code alone does not decide."""
    if not w.export_script or not Path(w.export_script).is_file():
        return []
    unread = unread_export(Path(w.export_script).read_text(encoding="utf-8"), w.key)
    if not unread:
        return []
    return [
        f"{Path(w.export_script).name}: its own {'; '.join(unread)} for {w.key} could not be read; "
        "measured with the declared inputs"
    ]


def patches_for(
    report: Any,
    root: str | Path,
    export_script: str | None = None,
    infer_script: str | None = None,
    key: str | None = None,
    pick: int | None = None,
    prefer: str | None = None,
) -> tuple[list[Patch], list[str]]:
    """The diffs of the chosen kept fixes: model source edits, then the export and inference
    settings in the given scripts (for this model's session and export call), or in a new
    export_onnx.py when none is given."""
    key = key or Path(report.find.measure.model.path).stem
    work = work_for(report, key, export_script, infer_script, pick, prefer)
    patches, notes, _ = compose([work], root)
    return patches, notes[key]
