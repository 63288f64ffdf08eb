"""The export script (``--export-script``): the kept export settings on a model's
``torch.onnx.export`` call (exporter, ``dynamic_shapes``/``dynamic_axes``, ``do_constant_folding``,
``opset_version``, ``export_params``), symbolic registrations before it and an onnxsim step after
it; and the settings a script already uses, read back."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import libcst as cst

from bisector.common.errors import UserError
from bisector.fixers.onnx_symbolics import SYMBOLICS, registration_code
from bisector.model.choices import choose_exporter
from bisector.patching.cst_edits import (
    MARK,
    code_of,
    dotted,
    ensure_imports,
    insert_after_imports,
    read_script,
    set_kwarg,
)
from bisector.patching.diff import Patch
from bisector.patching.flow import Flow, Key
from bisector.patching.settings import Settings, dynamic_dims_by_input


def dynamic_spec_code(plan: Any, bounded: Mapping[str, Sequence[int]], exporter: str) -> str | None:
    """`dynamic_shapes=` (torch.export) or `dynamic_axes=` (TorchScript) text for the plan's inputs."""
    if plan is None or plan.use_hook or not plan.inputs:
        return None
    parts = []
    for name, dims in dynamic_dims_by_input(plan).items():
        if exporter == "dynamo":
            inner = ", ".join(
                f"{i}: torch.export.Dim({d!r}, min={bounded[d][0]}, max={bounded[d][1]})"
                if d in bounded
                else f"{i}: torch.export.Dim.AUTO"
                for i, d in dims.items()
            )
        else:
            inner = ", ".join(f"{i}: {d!r}" for i, d in dims.items())
        parts.append(f"{name!r}: {{{inner}}}")
    return "{" + ", ".join(parts) + "}" if parts else None


# The helper that runs each export in a child process (Settings.export_in_child).
CHILD = f"{MARK}_export_in_child"


def child_helper_code(works_around: str) -> str:
    """The helper's definition; its comment names what it works around (the upstream bug)."""
    why = textwrap.wrap(
        f"bisector: export in a child process; works around {works_around}. What the exporter keeps on every "
        "export goes away with the child, so a service or CI job that exports many times in one process stays "
        "flat. Fork, not spawn: the model is already in memory.",
        width=96,
    )
    return (
        f"def {CHILD}(export, *args, **kwargs):\n"
        + "".join(f"    # {line}\n" for line in why)
        + "    import multiprocessing\n"
        "\n"
        "    child = multiprocessing.get_context('fork').Process(target=export, args=args, kwargs=kwargs)\n"
        "    child.start()\n"
        "    child.join()\n"
        "    if child.exitcode != 0:\n"
        "        raise RuntimeError(f'torch.onnx.export failed in its child process (exit code {child.exitcode})')\n"
    )


def _is_export(call: cst.Call) -> bool:
    name = dotted(call.func)
    return name.endswith("onnx.export") or name == CHILD


def _path_arg(call: cst.Call) -> cst.BaseExpression | None:
    """The export call's output path: `f=` or the third positional argument (the helper's first
    argument is the export function)."""
    positional = [a for a in call.args if a.keyword is None]
    if dotted(call.func) == CHILD:
        positional = positional[1:]
    f = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "f"), None)
    if f is None and len(positional) >= 3:
        f = positional[2].value
    return f


def export_call_owner(call: cst.Call, flow: Flow | None = None) -> tuple[str | None, bool]:
    """(the model key its output path names, whether the path is built from a name: a call
    shared by several models). flow: the script's data flow, call one of its nodes."""

    f = _path_arg(call)
    if f is None:
        return None, False
    key = (flow or Flow(cst.Module(body=[cst.SimpleStatementLine([cst.Expr(call)])]))).key_of(f)
    return key.literal, key.code is not None


class _ExportCalls(cst.CSTTransformer):
    """The kept export settings on this model's export call. A call whose path is built from a
    name serves every model: it is changed only when the change is already there (nothing to add),
    else a note says what to set by hand, since a setting there would change every model's export."""

    def __init__(
        self, settings: Settings, plan: Any, key: str | None = None, n_calls: int = 1, flow: Flow | None = None
    ) -> None:
        self.flow = flow
        self.settings = settings
        self.plan = plan
        self.key = key
        self.n_calls = n_calls
        self.found = 0
        self.paths: list[str] = []
        self.shared_changes: list[str] = []
        self.shared = False  # the call edited serves every model

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if not _is_export(updated):
            return updated
        literal, shared = export_call_owner(original, self.flow)
        if self.key is not None and literal is not None and literal != self.key and self.n_calls > 1:
            return updated  # another model's export
        self.found += 1
        self.shared = self.shared or (shared and self.key is not None)
        new = self._settle(updated)
        if shared and self.key is not None and code_of(new) != code_of(updated):
            self.shared_changes.append(code_of(updated).split("(", 1)[0])
            return updated
        return new

    def _settle(self, updated: cst.Call) -> cst.Call:
        s = self.settings
        call = updated
        if s.exporter:
            call = set_kwarg(call, "dynamo", "True" if s.exporter == "dynamo" else "False")
        for key, value in sorted((s.export_kwargs or {}).items()):
            call = set_kwarg(call, key, repr(value))
        if s.bounded_dims:
            exporter = choose_exporter(s.exporter)
            code = dynamic_spec_code(self.plan, s.bounded_dims, exporter)
            if code:
                call = set_kwarg(call, "dynamic_shapes" if exporter == "dynamo" else "dynamic_axes", code)
                has_names = any(a.keyword is not None and a.keyword.value == "input_names" for a in call.args)
                if exporter != "dynamo" and not has_names:  # dynamic_axes names inputs: the graph must use those names
                    call = set_kwarg(call, "input_names", repr([i.name for i in self.plan.inputs]))
        f = _path_arg(call)
        if f is not None:
            self.paths.append(code_of(f))
        if s.export_in_child and dotted(call.func) != CHILD:
            comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            call = call.with_changes(func=cst.Name(CHILD), args=[cst.Arg(call.func, comma=comma), *call.args])
        return call


def script_input_names(path: str, key: str | None = None) -> list[str] | None:
    """The input_names=... the script's export call gives this model (literal, or looked up in a
    literal table by the model's key), if it can be read."""
    try:
        text, _ = read_script(path, "--export-script")
    except UserError:
        return None
    names = _read_export(text, key or Path(path).stem)[0].get("export_kwargs", {}).get("input_names")
    return list(names) if names else None


def _export_calls(module: cst.Module) -> list[cst.Call]:
    calls: list[cst.Call] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if _is_export(node):
                calls.append(node)

    module.visit(V())
    return calls


_KWARGS = ("opset_version", "do_constant_folding", "export_params")
_TABLED = ("input_names", "dynamic_axes")  # often looked up per model in the script's tables


def _model_call(flow: Flow, key: str) -> tuple[cst.Call, Key] | None:
    """This model's export call (its own, or the one every model shares) and what names the model there."""
    calls = []
    for c in _export_calls(flow.module):
        f = _path_arg(c)
        calls.append((c, flow.key_of(f) if f is not None else Key(why="no output path")))
    mine = (
        [c for c in calls if c[1].literal == key]
        or [c for c in calls if c[1].code is not None]
        or (calls if len(calls) == 1 else [])
    )
    return mine[0] if mine else None


def _read_export(source: str, key: str) -> tuple[dict[str, Any], list[str]]:
    """(probe overrides, the settings the call passes that could not be read, each with why)."""
    try:
        flow = Flow(source)
    except cst.ParserSyntaxError:
        return {}, []
    found = _model_call(flow, key)
    if found is None:
        return {}, []
    call, owner = found
    # A shared call's tables are read at this model's entry: its key bound to the variable that
    # carries the name (`dynamic_axes=AXES[name]` with name = the model's artifact).
    env = {owner.code: owner.table_key(key)} if owner.code and owner.code.isidentifier() else {}
    out: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    unread: list[str] = []
    for a in call.args:
        name = a.keyword.value if a.keyword is not None else ""
        if name not in ("dynamo", *_KWARGS, *_TABLED):
            continue
        try:
            value = flow.evaluate(a.value, env)
        except ValueError as exc:
            if name in _TABLED:
                unread.append(f"{name} ({exc})")
            continue
        if name == "dynamo" and isinstance(value, bool):
            out["exporter"] = "dynamo" if value else "torchscript"
        elif name in _KWARGS:
            kwargs[name] = value
        elif name == "input_names" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            kwargs[name] = list(value)
        elif name == "dynamic_axes" and isinstance(value, dict):
            kwargs[name] = value
        elif name in _TABLED:
            unread.append(f"{name} (`{code_of(a.value)}` is not what torch.onnx.export takes)")
    if "dynamic_axes" in kwargs and "input_names" not in kwargs:
        # dynamic_axes names the graph's inputs: without the names the probe's export would not match them
        del kwargs["dynamic_axes"]
        unread.append("dynamic_axes (its input_names could not be read)")
    if kwargs:
        out["export_kwargs"] = kwargs
    return out, unread


def read_export(source: str, key: str) -> dict[str, Any]:
    """The export settings the script uses for this model, as probe overrides: the exporter
    (`dynamo=`), opset_version, do_constant_folding and export_params, and input_names and
    dynamic_axes, of its call (the model's own, or the one shared by every model), where the code
    alone decides them: literals, or literal tables looked up by the model's key."""
    return _read_export(source, key)[0]


def unread_export(source: str, key: str) -> list[str]:
    """The input_names and dynamic_axes the script passes for this model that could not be read
    (not literals), each with why: measured with the declared inputs instead."""
    return _read_export(source, key)[1]


def patch_export_script(
    path: str, settings: Settings, plan: Any, root: str, key: str | None = None, text: str | None = None
) -> tuple[Patch, list[str]]:
    """This model's export settings on its export call (text: the script as earlier models' edits
    left it); notes for what could not be written there."""
    original, module = read_script(path, "--export-script")
    if text is not None:
        module = cst.parse_module(text)
    flow = Flow(module)
    text = flow.module.code
    t = _ExportCalls(settings, plan, key, len(_export_calls(flow.module)), flow)
    new = flow.module.visit(t).code
    name = Path(path).name
    notes = []
    if t.shared_changes:
        notes.append(
            f"{name}: its export call builds every model's path from a name, so bisector does not change it "
            f"for {key} alone; see {key}'s kept fix for the export settings to set by hand"
        )
    if not t.found:
        notes.append(f"{name}: no torch.onnx.export call found; the settings are in export_onnx.py instead")
        return Patch.of_file(path, original, text, "no export call", root), notes
    if settings.symbolics:  # kept only when measured with the TorchScript exporter, the one that reads them
        missing = [op for op in settings.symbolics if f"def {SYMBOLICS[op].function.__name__}(" not in new]
        if missing:
            new = insert_after_imports(ensure_imports(new, ["import torch"]), registration_code(missing))
    if settings.export_in_child and f"def {CHILD}(" not in new and CHILD in new:
        new = insert_after_imports(new, child_helper_code(settings.export_in_child))
    if settings.onnxsim and "onnxsim.simplify" not in new:
        if t.shared:
            notes.append(
                f"{name}: its export call serves every model; an onnxsim step for {key} alone is not written there"
            )
        elif t.paths:
            new = _after_export_call(new, t.paths[0])
            new = ensure_imports(new, ["import onnx", "import onnxsim"])
        else:
            notes.append(f"{name}: the export call writes to no path bisector can see; add the onnxsim step by hand")
    return Patch.of_file(path, original, new, "export settings", root), notes


def _after_export_call(source: str, path_code: str) -> str:
    """Insert the onnxsim step after the statement holding the (first) export call."""
    module = cst.parse_module(source)
    step = cst.parse_module(
        f"{MARK}_model, {MARK}_ok = onnxsim.simplify(onnx.load({path_code}))  # bisector: fold shape subgraphs\n"
        f"if {MARK}_ok:\n    onnx.save({MARK}_model, {path_code})\n"
    ).body

    class T(cst.CSTTransformer):
        done = False

        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine) -> Any:
            if self.done:
                return u
            found = False

            class V(cst.CSTVisitor):
                def visit_Call(self, n: cst.Call) -> None:
                    nonlocal found
                    if _is_export(n):
                        found = True

            o.visit(V())
            if not found:
                return u
            self.done = True
            return cst.FlattenSentinel([u, *step])

    return module.visit(T()).code
