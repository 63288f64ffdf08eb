"""Kept fixes as unified diffs of the user's own files, and applying them safely.

- model source: the edits fixers made (libcst, formatting and comments kept);
- the export script (``--export-script``): the ``torch.onnx.export`` call's keyword arguments
  (exporter, ``dynamic_shapes``/``dynamic_axes``, ``do_constant_folding``, ``opset_version``,
  ``export_params``) and an onnxsim step after it;
- the inference script (``--infer-script``): the model's session, provider and run options and a
  warm-up at the largest input, in a per-model table applied at the session that loads its
  ``.onnx`` (bisector.serving), and input padding to multiples of 16 where that fix was kept;
- no script given: a new ``export_onnx.py`` with the recommended settings, as a diff against
  nothing.

Every transform is idempotent per setting (a second run adds what is missing and nothing else;
no file-wide marker), diffs are git-style with ``index`` lines, and a patch whose text does not
change has the diff "". Several models' edits of one file compose into one patch (``compose``). ``apply`` writes only files that are unchanged since they were read
(hash), never outside the project root, atomically, keeping a backup.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import libcst as cst

from bisector.errors import UserError
from bisector.interrupts import deferred
from bisector.fixers._cst import dotted as _dotted

# torch.onnx.export's own default since torch 2.9: what an export call without dynamo= uses.
DEFAULT_EXPORTER = "dynamo"
MARK = "_bisector"


@dataclass(frozen=True)
class Patch:
    path: str  # absolute
    before: str | None  # None: a new file
    after: str
    summary: str
    root: str = ""

    @property
    def rel(self) -> str:
        try:
            return str(Path(self.path).resolve().relative_to(Path(self.root).resolve())) if self.root else Path(self.path).name
        except ValueError:
            return self.path

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def diff(self) -> str:
        """A unified diff that `patch -p1` and `git apply` take from the project root; "" when
        nothing changes."""
        if not self.changed:
            return ""
        before = (self.before or "").splitlines(keepends=True)
        after = self.after.splitlines(keepends=True)
        for lines in (before, after):
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
        old = f"a/{self.rel}" if self.before is not None else "/dev/null"
        # git-style, with the blobs' ids, so `git apply --3way` can fall back on a merge
        head = f"diff --git a/{self.rel} b/{self.rel}\n"
        if self.before is None:
            head += f"new file mode 100644\nindex 0000000..{blob_id(self.after)[:7]}\n"
        else:
            head += f"index {blob_id(self.before)[:7]}..{blob_id(self.after)[:7]} 100644\n"
        return head + "".join(difflib.unified_diff(before, after, old, f"b/{self.rel}"))

    @property
    def before_hash(self) -> str | None:
        return None if self.before is None else digest(self.before)


def blob_id(text: str) -> str:
    """The id git gives this text as a blob."""
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def combined_diff(patches: Iterable[Patch]) -> str:
    return "".join(p.diff for p in patches)


# ---------------------------------------------------------------------------------------------
# Merging several source edits of one file


def merge_edits(before: str, afters: Sequence[str]) -> tuple[str, list[int]]:
    """Apply several edits made against the same text when their changed lines do not overlap.
    Returns the merged text and the indexes of the edits left out (overlapping an earlier one)."""
    base = before.splitlines(keepends=True)
    taken: list[tuple[int, int, list[str]]] = []  # (start, end, replacement) in base lines
    skipped: list[int] = []
    for k, after in enumerate(afters):
        ops = [op for op in difflib.SequenceMatcher(a=base, b=after.splitlines(keepends=True), autojunk=False).get_opcodes() if op[0] != "equal"]
        new_lines = after.splitlines(keepends=True)
        spans = [(i1, i2, new_lines[j1:j2]) for _, i1, i2, j1, j2 in ops]
        if any(not (e <= s0 or s >= e0) or (s == e == s0 == e0) for s, e, _ in spans for s0, e0, _ in taken):
            skipped.append(k)
            continue
        taken.extend(spans)
    out: list[str] = []
    pos = 0
    for s, e, repl in sorted(taken, key=lambda t: (t[0], t[1])):
        out.extend(base[pos:s])
        out.extend(repl)
        pos = max(pos, e)
    out.extend(base[pos:])
    return "".join(out), skipped


def source_patches(edits: Iterable[Any], root: str) -> tuple[list[Patch], list[str]]:
    """One patch per edited file, several edits merged; notes for edits that could not be."""
    by_path: dict[str, list[Any]] = {}
    for e in edits:
        by_path.setdefault(str(Path(e.path).resolve()), []).append(e)
    patches, notes = [], []
    for path, es in by_path.items():
        unique: dict[str, Any] = {}
        for e in es:
            unique.setdefault(e.after, e)  # the same edit proposed for two stages is one edit
        es = list(unique.values())
        before = es[0].before
        merged, skipped = merge_edits(before, [e.after for e in es])
        for k in skipped:
            notes.append(f"{Path(path).name}: '{es[k].summary}' overlaps another edit of the same lines; left out")
        patches.append(Patch(path, before, merged, "; ".join(e.summary for i, e in enumerate(es) if i not in skipped), root))
    return patches, notes


# ---------------------------------------------------------------------------------------------
# Settings gathered from kept fixes


@dataclass(frozen=True)
class Settings:
    exporter: str | None = None
    export_kwargs: Mapping[str, Any] = None  # type: ignore[assignment]
    bounded_dims: Mapping[str, Sequence[int]] = None  # type: ignore[assignment]
    onnxsim: bool = False
    session_options: Mapping[str, Any] = None  # type: ignore[assignment]
    provider_options: Mapping[str, Any] = None  # type: ignore[assignment]
    run_options: Mapping[str, Any] = None  # type: ignore[assignment]
    warmup_largest: bool = False
    round_multiple: int = 0
    symbolics: tuple[str, ...] = ()  # operators given a symbolic for the TorchScript exporter

    @classmethod
    def from_probes(cls, probes: Iterable[Mapping[str, Any]]) -> "Settings":
        exporter = None
        export_kwargs: dict[str, Any] = {}
        session: dict[str, Any] = {}
        provider: dict[str, Any] = {}
        run: dict[str, Any] = {}
        bounded: dict[str, Any] = {}
        symbolics: list[str] = []
        onnxsim = warm = False
        multiple = 0
        for p in probes:
            exporter = p.get("exporter", exporter)
            ek = dict(p.get("export_kwargs") or {})
            bounded.update(ek.pop("bounded_dims", {}) or {})
            symbolics += [op for op in ek.pop("symbolics", ()) or () if op not in symbolics]
            export_kwargs.update(ek)
            session.update(p.get("session_options") or {})
            provider.update(p.get("provider_options") or {})
            run.update(p.get("run_options") or {})
            onnxsim = onnxsim or any(str(x).startswith("onnxsim") for x in p.get("post_export") or ())
            warm = warm or p.get("warmup") == "largest"
            t = p.get("input_transform") or ""
            if t.startswith("round:"):
                multiple = int(t.split(":", 1)[1])
        return cls(exporter, export_kwargs, bounded, onnxsim, session, provider, run, warm, multiple, tuple(symbolics))

    @property
    def export_related(self) -> bool:
        return bool(self.exporter or self.export_kwargs or self.bounded_dims or self.onnxsim or self.symbolics)

    @property
    def runtime_related(self) -> bool:
        # bounded dims count too: the serving code gets the guard that refuses out-of-range sizes
        return bool(self.session_options or self.provider_options or self.run_options or self.warmup_largest
                    or self.round_multiple or self.bounded_dims)


# ---------------------------------------------------------------------------------------------
# The export script


def _expr(code: str) -> cst.BaseExpression:
    return cst.parse_expression(code)


def _read_script(path: str, option: str) -> tuple[str, cst.Module]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return text, cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise UserError(f"cannot parse {option} {path}: {exc.message}") from None


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _set_kwarg(call: cst.Call, name: str, value: str) -> cst.Call:
    args = list(call.args)
    for i, a in enumerate(args):
        if a.keyword is not None and a.keyword.value == name:
            if _code(a.value).strip() == value:
                return call
            args[i] = a.with_changes(value=_expr(value))
            return call.with_changes(args=args)
    if args and args[-1].comma is cst.MaybeSentinel.DEFAULT:
        args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    args.append(cst.Arg(keyword=cst.Name(name), value=_expr(value), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))))
    return call.with_changes(args=args)


def _ensure_imports(source: str, lines: Sequence[str]) -> str:
    for line in lines:
        if line in source.splitlines():
            continue
        module = cst.parse_module(source)
        body = list(module.body)
        at = 0
        for i, node in enumerate(body):
            if isinstance(node, cst.SimpleStatementLine) and any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in node.body):
                at = i + 1
            elif i == 0 and isinstance(node, cst.SimpleStatementLine) and isinstance(node.body[0], cst.Expr) and isinstance(node.body[0].value, cst.SimpleString):
                at = 1
        body.insert(at, cst.parse_statement(line + "\n"))
        source = module.with_changes(body=body).code
    return source


def dynamic_spec_code(plan: Any, bounded: Mapping[str, Sequence[int]], exporter: str) -> str | None:
    """`dynamic_shapes=` (torch.export) or `dynamic_axes=` (TorchScript) text for the plan's inputs."""
    if plan is None or plan.use_hook or not plan.inputs:
        return None
    parts = []
    for name, dims in dynamic_dims_by_input(plan).items():
        if exporter == "dynamo":
            inner = ", ".join(
                f"{i}: torch.export.Dim({d!r}, min={bounded[d][0]}, max={bounded[d][1]})" if d in bounded else f"{i}: torch.export.Dim.AUTO"
                for i, d in dims.items()
            )
        else:
            inner = ", ".join(f"{i}: {d!r}" for i, d in dims.items())
        parts.append(f"{name!r}: {{{inner}}}")
    return "{" + ", ".join(parts) + "}" if parts else None


def export_call_owner(call: cst.Call) -> tuple[str | None, bool]:
    """(the model key its output path names, whether the path is built from a name: a call
    shared by several models)."""
    from bisector.serving import _path_key

    positional = [a for a in call.args if a.keyword is None]
    f = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "f"), None)
    if f is None and len(positional) >= 3:
        f = positional[2].value
    if f is None:
        return None, False
    literal, key_code = _path_key(f, {})
    return literal, bool(key_code) and literal is None


class _ExportCalls(cst.CSTTransformer):
    """The kept export settings on this model's export call. A call whose path is built from a
    name serves every model: it is changed only when the change is already there (nothing to add),
    else a note says what to set by hand, since a setting there would change every model's export."""

    def __init__(self, settings: Settings, plan: Any, key: str | None = None, n_calls: int = 1) -> None:
        self.settings = settings
        self.plan = plan
        self.key = key
        self.n_calls = n_calls
        self.found = 0
        self.paths: list[str] = []
        self.shared_changes: list[str] = []
        self.shared = False  # the call edited serves every model

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        name = _dotted(updated.func)
        if not name.endswith("onnx.export"):
            return updated
        literal, shared = export_call_owner(updated)
        if self.key is not None and literal is not None and literal != self.key and self.n_calls > 1:
            return updated  # another model's export
        self.found += 1
        self.shared = self.shared or (shared and self.key is not None)
        new = self._settle(updated)
        if shared and self.key is not None and _code(new) != _code(updated):
            self.shared_changes.append(_code(updated).split("(", 1)[0])
            return updated
        return new

    def _settle(self, updated: cst.Call) -> cst.Call:
        s = self.settings
        call = updated
        if s.exporter:
            call = _set_kwarg(call, "dynamo", "True" if s.exporter == "dynamo" else "False")
        for key, value in sorted((s.export_kwargs or {}).items()):
            call = _set_kwarg(call, key, repr(value))
        if s.bounded_dims:
            exporter = s.exporter or DEFAULT_EXPORTER
            code = dynamic_spec_code(self.plan, s.bounded_dims, exporter)
            if code:
                call = _set_kwarg(call, "dynamic_shapes" if exporter == "dynamo" else "dynamic_axes", code)
                has_names = any(a.keyword is not None and a.keyword.value == "input_names" for a in call.args)
                if exporter != "dynamo" and not has_names:  # dynamic_axes names inputs: the graph must use those names
                    call = _set_kwarg(call, "input_names", repr([i.name for i in self.plan.inputs]))
        positional = [a for a in call.args if a.keyword is None]
        f = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "f"), None)
        if f is None and len(positional) >= 3:
            f = positional[2].value
        if f is not None:
            self.paths.append(_code(f))
        return call


def script_input_names(path: str) -> list[str] | None:
    """The literal input_names=[...] of the script's first torch.onnx.export call, if it has one."""
    import ast

    try:
        _, module = _read_script(path, "--export-script")
    except UserError:
        return None
    found: list[list[str]] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if found or not _dotted(node.func).endswith("onnx.export"):
                return
            for a in node.args:
                if a.keyword is not None and a.keyword.value == "input_names":
                    try:
                        value = ast.literal_eval(_code(a.value))
                    except (ValueError, SyntaxError):
                        return
                    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                        found.append(list(value))

    module.visit(V())
    return found[0] if found else None


def _export_calls(module: cst.Module) -> list[cst.Call]:
    calls: list[cst.Call] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if _dotted(node.func).endswith("onnx.export"):
                calls.append(node)

    module.visit(V())
    return calls


def read_export(source: str, key: str) -> dict[str, Any]:
    """The export settings the script uses for this model, as probe overrides: the exporter
    (`dynamo=`) and the literal opset_version, do_constant_folding and export_params of its call
    (the model's own, or the one shared by every model)."""
    import ast

    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return {}
    calls = _export_calls(module)
    mine = [c for c in calls if export_call_owner(c)[0] == key] or [c for c in calls if export_call_owner(c)[1]] or (calls if len(calls) == 1 else [])
    if not mine:
        return {}
    out: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    for a in mine[0].args:
        if a.keyword is None:
            continue
        try:
            value = ast.literal_eval(_code(a.value))
        except (ValueError, SyntaxError):
            continue
        if a.keyword.value == "dynamo" and isinstance(value, bool):
            out["exporter"] = "dynamo" if value else "torchscript"
        elif a.keyword.value in ("opset_version", "do_constant_folding", "export_params"):
            kwargs[a.keyword.value] = value
    if kwargs:
        out["export_kwargs"] = kwargs
    return out


def patch_export_script(path: str, settings: Settings, plan: Any, root: str, key: str | None = None,
                        text: str | None = None) -> tuple[Patch, list[str]]:
    original, module = _read_script(path, "--export-script")
    if text is not None:
        module = cst.parse_module(text)
    text = module.code
    t = _ExportCalls(settings, plan, key, len(_export_calls(module)))
    new = module.visit(t).code
    notes = []
    if t.shared_changes:
        notes.append(f"{Path(path).name}: its export call builds every model's path from a name, so bisector does not change it "
                     f"for {key} alone; see {key}'s kept fix for the export settings to set by hand")
    if not t.found:
        notes.append(f"{Path(path).name}: no torch.onnx.export call found; the settings are in export_onnx.py instead")
        return Patch(path, original, text, "no export call", root), notes
    if settings.symbolics:  # kept only when measured with the TorchScript exporter, the one that reads them
        from bisector.fixers.onnx_symbolics import SYMBOLICS, registration_code

        missing = [op for op in settings.symbolics if f"def {SYMBOLICS[op].function.__name__}(" not in new]
        if missing:
            new = _insert_after_imports(_ensure_imports(new, ["import torch"]), registration_code(missing))
    if settings.onnxsim and "onnxsim.simplify" not in new:
        if t.shared:
            notes.append(f"{Path(path).name}: its export call serves every model; an onnxsim step for {key} alone is not written there")
        elif t.paths:
            new = _after_export_call(new, t.paths[0])
            new = _ensure_imports(new, ["import onnx", "import onnxsim"])
        else:
            notes.append(f"{Path(path).name}: the export call writes to no path bisector can see; add the onnxsim step by hand")
    return Patch(path, original, new, "export settings", root), notes


def _after_export_call(source: str, path_code: str) -> str:
    """Insert the onnxsim step after the statement holding the (first) export call."""
    module = cst.parse_module(source)
    step = cst.parse_module(
        f"{MARK}_model, {MARK}_ok = onnxsim.simplify(onnx.load({path_code}))  # bisector: fold shape subgraphs\n"
        f"if {MARK}_ok:\n    onnx.save({MARK}_model, {path_code})\n"
    ).body

    class T(cst.CSTTransformer):
        done = False

        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            if self.done:
                return u
            found = False

            class V(cst.CSTVisitor):
                def visit_Call(self, n: cst.Call) -> None:
                    nonlocal found
                    if _dotted(n.func).endswith("onnx.export"):
                        found = True

            o.visit(V())
            if not found:
                return u
            self.done = True
            return cst.FlattenSentinel([u, *step])

    return module.visit(T()).code


# ---------------------------------------------------------------------------------------------
# The inference script


def _settings_lines(var: str, s: Settings) -> list[str]:
    lines = []
    for key, value in sorted((s.session_options or {}).items()):
        if key == "arena_extend_strategy":
            strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(str(value), value)
            lines += [
                f"onnxruntime.create_and_register_allocator(onnxruntime.OrtMemoryInfo(\"Cpu\", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT), onnxruntime.OrtArenaCfg({{\"arena_extend_strategy\": {strategy}}}))  # bisector",
                f"{var}.add_session_config_entry(\"session.use_env_allocators\", \"1\")  # bisector: arena_extend_strategy={value}",
            ]
        elif "." in key:
            lines.append(f"{var}.add_session_config_entry({key!r}, {str(value)!r})  # bisector")
        else:
            lines.append(f"{var}.{key} = {value!r}  # bisector")
    return lines


def _providers_code(s: Settings) -> str:
    opts = ", ".join(f"{k!r}: {str(v)!r}" for k, v in sorted(s.provider_options.items()))
    return f"[(\"CUDAExecutionProvider\", {{{opts}}}), \"CPUExecutionProvider\"]"


def _run_options_lines(s: Settings) -> list[str]:
    return [f"{MARK}_run_options = onnxruntime.RunOptions()"] + [
        f"{MARK}_run_options.add_run_config_entry({k!r}, {str(v)!r})" for k, v in sorted(s.run_options.items())
    ]


class _Sessions(cst.CSTTransformer):
    """Session options before each InferenceSession statement, run options and padding on its runs,
    a warm-up after it."""

    def __init__(self, s: Settings, plan: Any) -> None:
        self.s = s
        self.plan = plan
        self.sessions: list[str] = []
        self.found = 0

    def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
        if len(u.body) != 1 or not isinstance(u.body[0], cst.Assign) or not isinstance(u.body[0].value, cst.Call):
            return u
        call = outer = u.body[0].value
        if _dotted(call.func) == f"{MARK}_session" and call.args and isinstance(call.args[0].value, cst.Call):
            call = call.args[0].value  # ours, around the user's: the settings live in the table
        if not _dotted(call.func).endswith("InferenceSession"):
            return u
        self.found += 1
        target = _dotted(u.body[0].targets[0].target) or "session"
        self.sessions.append(target)
        before: list[str] = []
        after: list[str] = []
        s = self.s
        options = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "sess_options"), None)
        positional = [a for a in call.args if a.keyword is None]
        if options is None and len(positional) >= 2:
            options = positional[1].value
        var = _dotted(options) if options is not None else ""
        if s.session_options:
            if not var:
                var = f"{MARK}_options"
                before.append(f"{var} = onnxruntime.SessionOptions()  # bisector")
                call = _set_kwarg(call, "sess_options", var)
            before += _settings_lines(var, s)
        if s.provider_options:
            providers = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "providers"), None)
            code = _providers_code(s)
            if providers is None or "CUDAExecutionProvider" in _code(providers):
                call = _set_kwarg(call, "providers", code)
        if s.run_options:
            after += [line + "  # bisector" for line in _run_options_lines(s)]
        if s.warmup_largest:
            after.append(f"{MARK}_warm_up({target})  # bisector: the arena takes its full size now, not one step per new largest input")
        if outer is not call:
            call = outer.with_changes(args=[outer.args[0].with_changes(value=call), *outer.args[1:]])
        new_stmt = u.with_changes(body=[u.body[0].with_changes(value=call)])
        stmts = [cst.parse_statement(line + "\n") for line in before]
        stmts.append(new_stmt)
        stmts += [cst.parse_statement(line + "\n") for line in after]
        return cst.FlattenSentinel(stmts)


class _Runs(cst.CSTTransformer):
    def __init__(self, sessions: list[str], s: Settings) -> None:
        self.sessions = sessions
        self.s = s

    def leave_Call(self, o: cst.Call, u: cst.Call) -> cst.Call:
        if not (isinstance(u.func, cst.Attribute) and u.func.attr.value == "run" and _dotted(u.func.value) in self.sessions):
            return u
        args = list(u.args)
        positional = [a for a in args if a.keyword is None]
        if self.s.run_options and len(positional) < 3 and not any(a.keyword and a.keyword.value == "run_options" for a in args):
            u = _set_kwarg(u, "run_options", f"{MARK}_run_options")
        if self.s.round_multiple and len(positional) >= 2:
            # session.run(names, feed, ...) -> _bisector_run(session.run, names, feed, 16, ...): the
            # feed is evaluated once, padded, and the outputs are cropped back to the caller's sizes.
            args = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in u.args]
            # positional arguments come first, so names and feed are args[0] and args[1]
            new_args = [cst.Arg(u.func), *args[:2], cst.Arg(cst.Integer(str(self.s.round_multiple))), *args[2:]]
            return cst.Call(func=cst.Name(f"{MARK}_run"), args=new_args)
        if self.s.bounded_dims and len(positional) >= 2:
            args = list(u.args)
            args[1] = args[1].with_changes(value=cst.Call(func=cst.Name(f"{MARK}_guard"), args=[cst.Arg(args[1].value)]))
            return u.with_changes(args=args)
        return u


def _helpers(s: Settings, plan: Any) -> str:
    """Helpers of a new export file: the warm-up (its feed built from the session's own inputs,
    the same tested helper the serving scripts get), then the feed helpers."""
    import inspect

    from bisector import serving_helpers
    from bisector.serving import largest_sizes

    out = []
    if s.warmup_largest:
        out.append(inspect.getsource(serving_helpers._bisector_feed))
        out.append(
            f"def {MARK}_warm_up(session):\n"
            f"    \"\"\"bisector: run twice at the largest input of every range (the memory pattern is recorded on\n"
            f"    the first run, used from the second).\"\"\"\n"
            f"    feed = {MARK}_feed(session, {largest_sizes(plan, s.round_multiple)!r})\n"
            f"    for _ in range(2):\n"
            f"        session.run(None, feed)\n"
        )
    feed = _feed_helpers(s, plan)
    if feed:
        out.append(feed)
    return "\n\n".join(out)


def dynamic_dims_by_input(plan: Any) -> dict[str, dict[int, str]]:
    """Which axes of which input vary (axis -> symbol, for symbols with a range): the only ones
    padding may touch and the guard checks."""
    if plan is None or plan.use_hook:
        return {}
    out = {}
    for spec in plan.inputs:
        axes = {i: d for i, d in enumerate(spec.dims) if isinstance(d, str) and plan.dims[d][0] != plan.dims[d][1]}
        if axes:
            out[spec.name] = axes
    return out


def _feed_helpers(s: Settings, plan: Any) -> str:
    """Helpers on the way from the caller's feed to the runtime: the bounds guard (bounded axes)
    and padding to a multiple with outputs cropped back (rounded sizes)."""
    if not (s.round_multiple or s.bounded_dims):
        return ""
    A = f"{MARK.upper()}_DYNAMIC_AXES"
    note = ""
    if plan is not None and plan.use_hook:
        note = "# bisector: the inputs come from bisector_inputs(); name the varying axes of each input here.\n"
    code = f"{note}{A} = {dynamic_dims_by_input(plan)!r}  # bisector: the axes that vary, per input\n"
    if s.bounded_dims:
        bounds = {k: tuple(int(x) for x in v) for k, v in sorted(s.bounded_dims.items())}
        code += (
            f"{MARK.upper()}_BOUNDS = {bounds!r}  # bisector: the ranges the model was exported for\n\n\n"
            f"def {MARK}_guard(feed):\n"
            f"    \"\"\"bisector: refuse sizes outside the exported bounds, before the runtime sees them.\"\"\"\n"
            f"    for name, value in feed.items():\n"
            f"        for i, sym in {A}.get(name, {{}}).items():\n"
            f"            lo, hi = {MARK.upper()}_BOUNDS.get(sym, (0, float(\"inf\")))\n"
            f"            if not lo <= value.shape[i] <= hi:\n"
            f"                raise ValueError(f\"input {{name}} axis {{i}} ({{sym}}) = {{value.shape[i]}} is outside {{lo}}..{{hi}}\")\n"
            f"    return feed\n"
        )
    if s.round_multiple:
        guard = f"{MARK}_guard(feed)" if s.bounded_dims else "feed"
        code += (
            f"\n\ndef {MARK}_pad(feed, multiple):\n"
            f"    \"\"\"bisector: zero-pad the varying axes of each input up to a multiple, so the runtime sees few\n"
            f"    distinct shapes (fixed axes are left alone).\"\"\"\n"
            f"    out = {{}}\n"
            f"    for name, value in feed.items():\n"
            f"        axes = {A}.get(name, {{}})\n"
            f"        out[name] = numpy.pad(value, [(0, (-n) % multiple if i in axes else 0) for i, n in enumerate(value.shape)])\n"
            f"    return out\n\n\n"
            f"def {MARK}_run(run, names, feed, multiple, *args, **kwargs):\n"
            f"    \"\"\"bisector: run on the padded feed, then crop the outputs back to the sizes passed. An output\n"
            f"    axis is cropped when the graph names it with the symbol of a padded input axis, never when the\n"
            f"    graph says it is fixed; an axis the graph leaves unnamed, when it lines up with a padded input\n"
            f"    axis (the same axis at the input's rank, or the batch axis 0). Check your outputs.\"\"\"\n"
            f"    padded = {MARK}_pad({guard}, multiple)\n"
            f"    outputs = run(names, padded, *args, **kwargs)\n"
            f"    session = getattr(run, \"__self__\", None)\n"
            f"    passed, shapes = {{}}, []\n"
            f"    if session is not None:\n"
            f"        for meta in session.get_inputs():\n"
            f"            for i in {A}.get(meta.name, {{}}):\n"
            f"                if meta.name in feed and i < len(meta.shape) and isinstance(meta.shape[i], str):\n"
            f"                    passed[meta.shape[i]] = feed[meta.name].shape[i]\n"
            f"        metas = {{m.name: m for m in session.get_outputs()}}\n"
            f"        shapes = [metas[n].shape for n in names] if names else [m.shape for m in session.get_outputs()]\n"
            f"    cropped = []\n"
            f"    for k, out in enumerate(outputs):\n"
            f"        if isinstance(out, numpy.ndarray):\n"
            f"            sizes = list(out.shape)\n"
            f"            shape = shapes[k] if k < len(shapes) else []\n"
            f"            for i in range(out.ndim):\n"
            f"                d = shape[i] if i < len(shape) else None\n"
            f"                if isinstance(d, int):\n"
            f"                    continue  # the graph says this axis is fixed\n"
            f"                if isinstance(d, str) and d in passed:\n"
            f"                    sizes[i] = min(sizes[i], passed[d])\n"
            f"                    continue\n"
            f"                for name, value in feed.items():\n"
            f"                    lines_up = i == 0 or out.ndim == value.ndim\n"
            f"                    if i in {A}.get(name, {{}}) and lines_up and out.shape[i] == padded[name].shape[i]:\n"
            f"                        sizes[i] = min(sizes[i], value.shape[i])\n"
            f"            out = out[tuple(slice(0, n) for n in sizes)]\n"
            f"        cropped.append(out)\n"
            f"    return cropped\n"
        )
    return code


def patch_infer_script(path: str, settings: Settings, plan: Any, root: str, key: str | None = None,
                       text: str | None = None) -> tuple[Patch, list[str]]:
    """This model's runtime settings on the session that loads its .onnx (see bisector.serving);
    padding and the bounds guard on that session's runs."""
    from bisector.serving import entry_for, patch_serving, site_for

    original = Path(path).read_text(encoding="utf-8")
    current = original if text is None else text
    try:
        module = cst.parse_module(current)
    except cst.ParserSyntaxError as exc:
        raise UserError(f"cannot parse --infer-script {path}: {exc.message}") from None
    key = key or Path(path).stem
    new, note = patch_serving(current, key, entry_for(settings, plan))
    if note:
        return Patch(path, original, current, "no session", root), [f"{Path(path).name}: {note}; the settings are in export_onnx.py instead"]
    notes: list[str] = []
    site, _ = site_for(new, key)
    shared = site is not None and site.literal is None and bool(site.key_code)
    if (settings.round_multiple or settings.bounded_dims) and shared:
        # Padding and the bounds guard wrap the session's runs: in code that serves every model
        # they would pad and guard every model's inputs with this model's axes. Not written.
        what = "rounded sizes" if settings.round_multiple else "the input bounds guard"
        notes.append(f"{Path(path).name}: its session serves every model; {what} for {key} is not written there (set it around {key}'s runs by hand)")
    elif settings.round_multiple or settings.bounded_dims:
        module = cst.parse_module(new)
        t = _Sessions(replace(settings, session_options={}, provider_options={}, run_options={}, warmup_largest=False), plan)
        module = module.visit(t)
        module = module.visit(_Runs(t.sessions, replace(settings, run_options={})))  # run options: _bisector_session
        new = module.code
        helpers = _feed_helpers(settings, plan)
        if helpers and f"def {MARK}_guard(" not in new and f"def {MARK}_run(" not in new:
            new = _insert_after_imports(_ensure_imports(new, ["import numpy"]), helpers)
    return Patch(path, original, new, "runtime settings", root), notes


def _insert_after_imports(source: str, code: str) -> str:
    module = cst.parse_module(source)
    body = list(module.body)
    at = 0
    for i, node in enumerate(body):
        if isinstance(node, cst.SimpleStatementLine) and any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in node.body):
            at = i + 1
    new_nodes = list(cst.parse_module(code).body)
    if new_nodes:
        new_nodes[0] = new_nodes[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    return module.with_changes(body=body[:at] + new_nodes + body[at:]).code


# ---------------------------------------------------------------------------------------------
# A new file when no script is given


def new_export_file(root: str, model: Any, plan: Any, settings: Settings, name: str = "export_onnx.py") -> Patch:
    """export_onnx.py: the model exported and served with the kept settings."""
    rel_model = os.path.relpath(model.path, root)
    module_name = Path(model.path).stem
    exporter = settings.exporter or DEFAULT_EXPORTER
    kwargs = [f"dynamo={exporter == 'dynamo'}"]
    dyn = dynamic_spec_code(plan, settings.bounded_dims or {}, exporter)
    if dyn:
        kwargs.append(f"dynamic_shapes={dyn}" if exporter == "dynamo" else f"dynamic_axes={dyn}")
        if exporter != "dynamo":
            kwargs.append(f"input_names={[i.name for i in plan.inputs]!r}")
    kwargs += [f"{k}={v!r}" for k, v in sorted((settings.export_kwargs or {}).items())]
    examples = []
    if plan is not None and not plan.use_hook:
        for spec in plan.inputs:
            dims = tuple(max(2, (plan.dims[d][0] + plan.dims[d][1]) // 2) if isinstance(d, str) else d for d in spec.dims)
            if spec.is_float:
                examples.append(f"torch.randn({dims!r})")
            else:
                examples.append(f"torch.zeros({dims!r}, dtype=torch.{spec.dtype})")
    lines = [
        f'"""Export {model.label} to ONNX and serve it with the settings bisector measured to keep memory flat.',
        "",
        f"Written by `bisector fix`; the model comes from {rel_model}.",
        '"""',
        "",
        "import sys",
        "from pathlib import Path",
        "",
        "import onnxruntime",
        "import torch",
        "",
    ]
    if settings.onnxsim:
        lines[9:9] = ["import onnx", "import onnxsim"]
    if settings.warmup_largest or settings.round_multiple or settings.bounded_dims:
        lines.insert(9, "import numpy")
    lines += [
        f"sys.path.insert(0, str(Path(__file__).resolve().parent / {str(Path(rel_model).parent)!r}))",
        f"from {module_name} import {model.name.split('.')[0]}  # noqa: E402",
        "",
        "",
    ]
    if settings.symbolics:
        from bisector.fixers.onnx_symbolics import registration_code

        lines += [registration_code(settings.symbolics).rstrip("\n"), "", ""]
    lines += [
        "def export(path: str = \"model.onnx\") -> str:",
        f"    model = {model.name}({', '.join(f'{k}={v!r}' for k, v in model.init_kwargs.items())}).eval()",
        f"    example = ({', '.join(examples)}{',' if len(examples) == 1 else ''})",
        f"    torch.onnx.export(model, example, path, {', '.join(kwargs)})",
    ]
    if settings.onnxsim:
        lines += [
            f"    {MARK}_model, {MARK}_ok = onnxsim.simplify(onnx.load(path))  # bisector: fold shape subgraphs",
            f"    if {MARK}_ok:",
            f"        onnx.save({MARK}_model, path)",
        ]
    lines += ["    return path", "", "", "def make_session(path: str = \"model.onnx\"):"]
    lines.append("    options = onnxruntime.SessionOptions()")
    lines += ["    " + ln for ln in _settings_lines("options", settings)]
    providers = _providers_code(settings) if settings.provider_options else "[\"CPUExecutionProvider\"]"
    lines.append(f"    session = onnxruntime.InferenceSession(path, sess_options=options, providers={providers})")
    if settings.warmup_largest:
        lines.append(f"    {MARK}_warm_up(session)")
    lines.append("    return session")
    if settings.round_multiple or settings.bounded_dims:
        ropt = ", run_options=run_options()" if settings.run_options else ""
        lines += ["", "", "def run(session, feed, names=None):"]
        if settings.round_multiple:
            lines += [f"    \"\"\"Run with the varying sizes padded up to multiples of {settings.round_multiple}; outputs come back cropped.\"\"\"",
                      f"    return {MARK}_run(session.run, names, feed, {settings.round_multiple}{ropt})"]
        else:
            lines += ["    \"\"\"Run, refusing sizes outside the bounds the model was exported for.\"\"\"",
                      f"    return session.run(names, {MARK}_guard(feed){ropt})"]
    if settings.run_options:
        lines += ["", "", "def run_options():"] + ["    " + line for line in _run_options_lines(settings)]
        lines.append(f"    return {MARK}_run_options")
    helpers = _helpers(settings, plan)
    if helpers:
        lines += ["", "", helpers.rstrip("\n")]
    lines += ["", "", 'if __name__ == "__main__":', "    make_session(export())", ""]
    text = "\n".join(lines)
    target = Path(root) / name
    before = target.read_text(encoding="utf-8") if target.exists() else None
    return Patch(str(target), before, text, "a new file with the recommended export and runtime settings", root)


# ---------------------------------------------------------------------------------------------
# Applying


def project_root(start: str | Path) -> Path:
    """The nearest folder above start with a pyproject.toml or .git; else start's folder.
    start is taken as the user gave it: symlinks are not followed, so a model file linked in
    from elsewhere still belongs to the project it was named in (apply then refuses to write
    through the link)."""
    p = Path(os.path.abspath(Path(start).expanduser()))
    p = p if p.is_dir() else p.parent
    for folder in [p, *p.parents]:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return p


def _inside(path: str | Path, root: str | Path, what: str = "") -> Path:
    """path's real location (every symlink, at any level, followed), refused unless it is inside
    root's real location."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    try:
        real.relative_to(real_root)
    except ValueError:
        via = "" if Path(os.path.abspath(path)) == real else f" (through a symlink, it is {real})"
        label = f"{what} {path}" if what else str(path)
        raise UserError(
            f"refusing to write {label}: it is outside the project root {real_root}{via}; nothing was written"
        ) from None
    return real


def _read_only(path: Path) -> bool:
    # The owner's write bit, not os.access: as root os.access says yes to every file.
    return path.exists() and not (path.stat().st_mode & stat.S_IWUSR)


def check_writable(path: str | Path, root: str | Path, what: str = "", force: bool = False) -> None:
    """Refuse, before any work, a file --apply could only write outside the project root, or a
    read-only one (unless force)."""
    real = _inside(path, root, what)
    if _read_only(real) and not force:
        label = f"{what} {path}" if what else str(path)
        raise UserError(f"refusing to write {label}: it is read-only; make it writable or pass --force. Nothing was written")


def apply(patches: Iterable[Patch], root: str | Path, force: bool = False, written: list[str] | None = None) -> list[str]:
    """Write every changed patch, or none: each file must be unchanged since it was read, lie
    inside root once every symlink is followed, and be writable (read-only only with force).
    Writes are atomic (temp file, rename); backups go to root/.bisector/backups/. written, when
    given, gets each file as soon as it is written (an interrupted apply still says what it did)."""
    root = Path(os.path.realpath(root))
    todo = [p for p in patches if p.changed]
    targets = {}
    for p in todo:
        target = _inside(p.path, root)
        targets[p.path] = target
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if (current is None) != (p.before is None) or (current is not None and digest(current) != p.before_hash):
            raise UserError(f"refusing to write {p.rel}: it changed since bisector read it; run fix again. Nothing was written") from None
        if _read_only(target) and not force:
            raise UserError(f"refusing to write {p.rel}: it is read-only; make it writable or pass --force. Nothing was written")
    backups = root / ".bisector" / "backups" / time.strftime("%Y%m%d-%H%M%S")
    if todo:
        _inside(backups, root)  # a .bisector linked elsewhere would carry the backups outside
    written = written if written is not None else []
    for p in todo:
        target = targets[p.path]
        if target.exists():
            keep = backups / target.relative_to(root)
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_bytes(target.read_bytes())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.bisector-tmp")
        tmp.write_text(p.after, encoding="utf-8")
        if target.exists():
            os.chmod(tmp, target.stat().st_mode)
        with deferred():  # Ctrl-C here would leave the file written but not reported as written
            os.replace(tmp, target)
            written.append(p.rel)
    return written


# ---------------------------------------------------------------------------------------------
# From a fix report to patches


def choose(kept: Sequence[Any], pick: int | None = None, prefer: str | None = None) -> Any | None:
    """The kept fix a patch is made of: the one `prefer` names (a fixer name or words of its
    summary), else the `pick`-th (1-based), else the best ranked that does not cost more up front
    than the growth it prevents (none when every kept fix does: say so, let the user pick)."""
    from bisector.repair import costs_more_than_it_saves

    if prefer:
        for e in kept:
            if prefer in e.fixer or prefer.lower() in e.summary.lower():
                return e
    if pick is not None and 1 <= pick <= len(kept):
        return kept[pick - 1]
    return next((e for e in kept if not costs_more_than_it_saves(e)), None)


def best_fixes(report: Any, pick: int | None = None, prefer: str | None = None) -> list[Any]:
    """The chosen kept fix of every culprit that has one."""
    chosen = []
    for c in report.find.culprits:
        e = choose([e for e in report.for_culprit(c) if e.kept], pick, prefer)
        if e is not None:
            chosen.append(e)
    return chosen


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
        return {"key": self.key, "edits": [{"path": e.path, "before": e.before, "after": e.after, "summary": e.summary} for e in self.edits],
                "probes": [dict(p) for p in self.probes], "exporter": self.exporter, "plan": self.plan.to_json() if self.plan is not None else None,
                "model": self.model.to_json(), "export_script": self.export_script, "infer_script": self.infer_script}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelWork":
        from bisector.fixers.base import SourceEdit
        from bisector.spec import InputPlan, ModelSpec

        return cls(data["key"], tuple(SourceEdit(**e) for e in data["edits"]), tuple(data["probes"]), data.get("exporter"),
                   InputPlan.from_json(data["plan"]) if data.get("plan") else None, ModelSpec.from_json(data["model"]),
                   data.get("export_script"), data.get("infer_script"))


def work_for(report: Any, key: str, export_script: str | None = None, infer_script: str | None = None,
             pick: int | None = None, prefer: str | None = None) -> ModelWork:
    chosen = best_fixes(report, pick, prefer)
    # Export as the run measured: an exporter chosen with --exporter (or read from the export
    # script) goes into every export call written; None means torch's own default.
    measured = getattr(getattr(report.find.measure, "options", None), "probe", None)
    plan = report.find.measure.plan
    if export_script and plan is not None and not plan.use_hook:
        # The graph's inputs carry the names the user's export gives them: dynamic_axes, the
        # guard and the padding must use those, not --input's.
        names = script_input_names(export_script)
        if names and len(names) == len(plan.inputs):
            plan = replace(plan, inputs=tuple(replace(spec, name=n) for spec, n in zip(plan.inputs, names)))
    return ModelWork(key, tuple(e for ev in chosen for e in ev.edits), tuple(dict(ev.probe) for ev in chosen),
                     getattr(measured, "exporter", None), plan, report.find.measure.model, export_script, infer_script)


def compose(works: Sequence[ModelWork], root: str | Path, new_file: str = "export_onnx.py") -> tuple[list[Patch], dict[str, list[str]], dict[str, list[str]]]:
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
        if not w.probes and not w.edits:
            continue  # nothing chosen for this model: its scripts stay as they are
        s = w.settings
        for related, script, fn in ((s.export_related, w.export_script, patch_export_script), (s.runtime_related, w.infer_script, patch_infer_script)):
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
        patches.append(Patch(path, original, current, "settings for " + ", ".join(w.key for w in works if path in files[w.key]), root))
    for w in {w.key: w for w in need_file}.values():  # ModelWork holds dicts: dedupe by key
        name = new_file if len(works) == 1 else f"export_{w.key}.py"
        p = new_export_file(root, w.model, w.plan, w.settings, name)
        patches.append(p)
        files[w.key].append(p.path)
    for k in files:
        files[k] = list(dict.fromkeys(files[k]))
    return [p for p in patches if p.changed], notes, files


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
