"""A new ``export_onnx.py`` when no script is given: the model exported and served with the kept
settings, as a diff against nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bisector.fixers.onnx_symbolics import registration_code
from bisector.model.choices import choose_exporter
from bisector.patching.cst_edits import MARK, read_text
from bisector.patching.diff import Patch
from bisector.patching.export_script import CHILD, child_helper_code, dynamic_spec_code
from bisector.patching.infer_script import feed_helpers_code
from bisector.patching.script_helpers import WARM_UP_HELPERS, source_of
from bisector.patching.settings import Settings, largest_sizes


def _session_option_lines(var: str, s: Settings) -> list[str]:
    """The kept session options set on the SessionOptions named var, one line each."""
    lines = []
    for key, value in sorted((s.session_options or {}).items()):
        if key == "arena_extend_strategy":
            strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(str(value), value)
            info = (
                'onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, '
                "onnxruntime.OrtMemType.DEFAULT)"
            )
            cfg = f'onnxruntime.OrtArenaCfg({{"arena_extend_strategy": {strategy}}})'
            lines += [
                f"onnxruntime.create_and_register_allocator({info}, {cfg})  # bisector",
                f'{var}.add_session_config_entry("session.use_env_allocators", "1")'
                f"  # bisector: arena_extend_strategy={value}",
            ]
        elif "." in key:
            lines.append(f"{var}.add_session_config_entry({key!r}, {str(value)!r})  # bisector")
        else:
            lines.append(f"{var}.{key} = {value!r}  # bisector")
    return lines


def _providers_code(s: Settings) -> str:
    opts = ", ".join(f"{k!r}: {str(v)!r}" for k, v in sorted(s.provider_options.items()))
    return f'[("CUDAExecutionProvider", {{{opts}}}), "CPUExecutionProvider"]'


def _run_options_lines(s: Settings) -> list[str]:
    return [f"{MARK}_run_options = onnxruntime.RunOptions()"] + [
        f"{MARK}_run_options.add_run_config_entry({k!r}, {str(v)!r})" for k, v in sorted(s.run_options.items())
    ]


def _helpers(s: Settings, plan: Any) -> str:
    """Helpers of a new export file, after the constants they read: the warm-up (its feed built
    from the session's own inputs, as in serving scripts), then the feed helpers."""

    out = []
    if s.warmup_largest:
        largest = largest_sizes(plan, s.round_multiple)
        out.append(
            f"{MARK.upper()}_WARM_UP_LARGEST = {largest!r}  # bisector: per input, the largest size of each "
            f"varying axis\n\n\n{source_of(WARM_UP_HELPERS)}"
        )
    feed = feed_helpers_code(s, plan)
    if feed:
        out.append(feed)
    return "\n\n".join(out)


def _examples(plan: Any) -> list[str]:
    """Example inputs for the export: each varying axis at the middle of its range (at least 2:
    torch.export specializes sizes 0 and 1)."""
    examples: list[str] = []
    if plan is None or plan.use_hook:
        return examples
    for spec in plan.inputs:
        dims = tuple(max(2, (plan.dims[d][0] + plan.dims[d][1]) // 2) if isinstance(d, str) else d for d in spec.dims)
        if spec.is_float:
            examples.append(f"torch.randn({dims!r})")
        else:
            examples.append(f"torch.zeros({dims!r}, dtype=torch.{spec.dtype})")
    return examples


def new_export_file(root: str, model: Any, plan: Any, settings: Settings, name: str = "export_onnx.py") -> Patch:
    """export_onnx.py: the model exported and served with the kept settings."""

    rel_model = os.path.relpath(model.path, root)
    exporter = choose_exporter(settings.exporter)
    kwargs = _export_kwargs(plan, settings, exporter)
    lines = _head(model, rel_model, settings)
    lines += _export_function(model, plan, settings, kwargs)
    lines += _session_function(settings)
    lines += _run_functions(settings)
    helpers = _helpers(settings, plan)
    if helpers:
        lines += ["", "", helpers.rstrip("\n")]
    lines += ["", "", 'if __name__ == "__main__":', "    make_session(export())", ""]
    text = "\n".join(lines)
    target = Path(root) / name
    before = read_text(str(target), "the existing") if target.exists() else None
    return Patch.of_file(str(target), before, text, "a new file with the recommended export and runtime settings", root)


def _export_kwargs(plan: Any, settings: Settings, exporter: str) -> list[str]:
    """torch.onnx.export's keyword arguments, as code: the exporter, the varying axes, the kept ones."""
    kwargs = [f"dynamo={exporter == 'dynamo'}"]
    dyn = dynamic_spec_code(plan, settings.bounded_dims or {}, exporter)
    if dyn:
        kwargs.append(f"dynamic_shapes={dyn}" if exporter == "dynamo" else f"dynamic_axes={dyn}")
        if exporter != "dynamo":
            kwargs.append(f"input_names={[i.name for i in plan.inputs]!r}")
    kwargs += [f"{k}={v!r}" for k, v in sorted((settings.export_kwargs or {}).items())]
    return kwargs


def _head(model: Any, rel_model: str, settings: Settings) -> list[str]:
    """The docstring, the imports the settings need, the model's import, and the helpers the
    export needs (symbolic registrations, the export-in-a-child helper)."""
    module_name = Path(model.path).stem
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
        lines += [registration_code(settings.symbolics).rstrip("\n"), "", ""]
    if settings.export_in_child:
        lines += [child_helper_code(settings.export_in_child).rstrip("\n"), "", ""]
    return lines


def _export_function(model: Any, plan: Any, settings: Settings, kwargs: list[str]) -> list[str]:
    """export(): the model built, exported at example inputs, simplified by onnxsim if kept."""
    examples = _examples(plan)
    lines = [
        'def export(path: str = "model.onnx") -> str:',
        f"    model = {model.name}({', '.join(f'{k}={v!r}' for k, v in model.init_kwargs.items())}).eval()",
        f"    example = ({', '.join(examples)}{',' if len(examples) == 1 else ''})",
        f"    {CHILD + '(torch.onnx.export, ' if settings.export_in_child else 'torch.onnx.export('}"
        f"model, example, path, {', '.join(kwargs)})",
    ]
    if settings.onnxsim:
        lines += [
            f"    {MARK}_model, {MARK}_ok = onnxsim.simplify(onnx.load(path))  # bisector: fold shape subgraphs",
            f"    if {MARK}_ok:",
            f"        onnx.save({MARK}_model, path)",
        ]
    lines += ["    return path"]
    return lines


def _session_function(settings: Settings) -> list[str]:
    """make_session(): the session with the kept options and providers, warmed up if kept."""
    lines = ["", "", 'def make_session(path: str = "model.onnx"):']
    lines.append("    options = onnxruntime.SessionOptions()")
    lines += ["    " + ln for ln in _session_option_lines("options", settings)]
    providers = _providers_code(settings) if settings.provider_options else '["CPUExecutionProvider"]'
    lines.append(f"    session = onnxruntime.InferenceSession(path, sess_options=options, providers={providers})")
    if settings.warmup_largest:
        lines.append(f"    {MARK}_warm_up(session)")
    lines.append("    return session")
    return lines


def _run_functions(settings: Settings) -> list[str]:
    """run() (padding or the bounds guard) and run_options(), when the settings need them."""
    lines: list[str] = []
    if settings.round_multiple or settings.bounded_dims:
        ropt = ", run_options=run_options()" if settings.run_options else ""
        lines += ["", "", "def run(session, feed, names=None):"]
        if settings.round_multiple:
            m = settings.round_multiple
            lines += [
                f'    """Run with the varying sizes padded up to multiples of {m}; outputs come back cropped."""',
                f"    return {MARK}_run(session.run, names, feed, {m}{ropt})",
            ]
        else:
            lines += [
                '    """Run, refusing sizes outside the bounds the model was exported for."""',
                f"    return session.run(names, {MARK}_guard(feed){ropt})",
            ]
    if settings.run_options:
        lines += ["", "", "def run_options():"] + ["    " + line for line in _run_options_lines(settings)]
        lines.append(f"    return {MARK}_run_options")
    return lines
