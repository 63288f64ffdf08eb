"""The inference script (``--infer-script``): the model's session, provider and run options and a
warm-up at the largest input, in the per-model table at the session that loads its ``.onnx``
(bisector.patching.serving); and, on that session's runs, input padding to a multiple (outputs
cropped back) and the guard of bounded axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libcst as cst

from bisector.common.errors import UserError
from bisector.patching.cst_edits import MARK, dotted, ensure_imports, insert_after_imports, read_text
from bisector.patching.diff import Patch
from bisector.patching.script_helpers import GUARD_HELPERS, PADDING_HELPERS, source_of
from bisector.patching.serving import entry_for, patch_serving
from bisector.patching.settings import Settings, dynamic_dims_by_input
from bisector.patching.sites import SESSION_WRAPPER, place


def _session_names(module: cst.Module) -> list[str]:
    """The names sessions are assigned to: `session = InferenceSession(...)`, bisector's wrapper
    around it included."""
    names: list[str] = []

    class V(cst.CSTVisitor):
        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
            if len(node.body) != 1 or not isinstance(node.body[0], cst.Assign):
                return
            if not isinstance(node.body[0].value, cst.Call):
                return
            call = node.body[0].value
            if dotted(call.func) == SESSION_WRAPPER and call.args and isinstance(call.args[0].value, cst.Call):
                call = call.args[0].value
            if dotted(call.func).endswith("InferenceSession"):
                names.append(dotted(node.body[0].targets[0].target) or "session")

    module.visit(V())
    return names


class _Runs(cst.CSTTransformer):
    """The session's runs padded (`_bisector_run(session.run, names, feed, 16, ...)`) or guarded
    (`session.run(names, _bisector_guard(feed), ...)`)."""

    def __init__(self, sessions: list[str], s: Settings) -> None:
        self.sessions = sessions
        self.s = s

    def leave_Call(self, o: cst.Call, u: cst.Call) -> cst.Call:
        is_run = isinstance(u.func, cst.Attribute) and u.func.attr.value == "run"
        if not is_run or dotted(u.func.value) not in self.sessions:
            return u
        positional = [a for a in u.args if a.keyword is None]
        if self.s.round_multiple and len(positional) >= 2:
            # session.run(names, feed, ...) -> _bisector_run(session.run, names, feed, 16, ...): the
            # feed is evaluated once, padded, and the outputs are cropped back to the caller's sizes.
            args = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in u.args]
            # positional arguments come first, so names and feed are args[0] and args[1]
            new_args = [cst.Arg(u.func), *args[:2], cst.Arg(cst.Integer(str(self.s.round_multiple))), *args[2:]]
            return cst.Call(func=cst.Name(f"{MARK}_run"), args=new_args)
        if self.s.bounded_dims and len(positional) >= 2:
            args = list(u.args)
            guarded = cst.Call(func=cst.Name(f"{MARK}_guard"), args=[cst.Arg(args[1].value)])
            args[1] = args[1].with_changes(value=guarded)
            return u.with_changes(args=args)
        return u


def feed_helpers_code(s: Settings, plan: Any) -> str:
    """Helpers on the way from the caller's feed to the runtime, after the constants they read: the
    bounds guard (bounded axes), and padding to a multiple with outputs cropped back (rounded
    sizes; guarded too, against no bounds when none were kept)."""

    if not (s.round_multiple or s.bounded_dims):
        return ""
    prefix = MARK.upper()
    code = ""
    if plan is not None and plan.use_hook:
        code += "# bisector: the inputs come from bisector_inputs(); name the varying axes of each input here.\n"
    code += f"{prefix}_DYNAMIC_AXES = {dynamic_dims_by_input(plan)!r}  # bisector: the axes that vary, per input\n"
    bounds = {k: tuple(int(x) for x in v) for k, v in sorted((s.bounded_dims or {}).items())}
    why = "the ranges the model was exported for" if bounds else "no bounds kept: every size passes"
    code += f"{prefix}_BOUNDS = {bounds!r}  # bisector: {why}\n"
    return code + "\n\n" + source_of(PADDING_HELPERS if s.round_multiple else GUARD_HELPERS)


def patch_infer_script(
    path: str, settings: Settings, plan: Any, root: str, key: str | None = None, text: str | None = None
) -> tuple[Patch, list[str]]:
    """This model's runtime settings on the session that loads its .onnx (see
    bisector.patching.serving); padding and the bounds guard on that session's runs."""

    original = read_text(path, "--infer-script")
    current = original if text is None else text
    try:
        cst.parse_module(current)
    except cst.ParserSyntaxError as exc:
        raise UserError(f"cannot parse --infer-script {path}: {exc.message}") from None
    name = Path(path).name
    key = key or Path(path).stem
    served = patch_serving(current, key, entry_for(settings, plan))
    new = served.text
    if served.note and not served.placed:
        notes = [f"{name}: {served.note}; the settings are in export_onnx.py instead"]
        return Patch.of_file(path, original, current, "no session", root), notes
    notes: list[str] = [f"{name}: {served.note}"] if served.note else []
    shared = place(new, key).shared
    if (settings.round_multiple or settings.bounded_dims) and shared:
        # Padding and the bounds guard wrap the session's runs: in code that serves every model
        # they would pad and guard every model's inputs with this model's axes. Not written.
        what = "rounded sizes" if settings.round_multiple else "the input bounds guard"
        notes.append(
            f"{name}: its session serves every model; {what} for {key} is not written there "
            f"(set it around {key}'s runs by hand)"
        )
    elif settings.round_multiple or settings.bounded_dims:
        module = cst.parse_module(new)
        # run options are not written here: the serving table applies them (_bisector_session)
        new = module.visit(_Runs(_session_names(module), settings)).code
        helpers = feed_helpers_code(settings, plan)
        if helpers and f"def {MARK}_guard(" not in new and f"def {MARK}_run(" not in new:
            new = insert_after_imports(ensure_imports(new, ["import numpy"]), helpers)
    return Patch.of_file(path, original, new, "runtime settings", root), notes
