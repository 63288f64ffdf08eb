"""What to measure: the model ("path.py:Name") and its inputs ("x=B,3,H,W:float32").

Everything here is parsed and checked in the parent process without importing torch, so a typo
costs milliseconds and one clear line, not a child process and a traceback.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisector.common.errors import UserError
from bisector.common.source_text import SourceError, read_source

_DIGITS = re.compile(r"^[0-9]+$")  # str.isdigit() also takes "²", which int() refuses
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# The ranges users report trouble in (seed article: batch 1-16, sizes 5-100).
DEFAULT_BATCH_RANGE = (1, 16)
DEFAULT_DIM_RANGE = (5, 100)
BATCH_SYMBOLS = frozenset({"B", "N", "batch", "BATCH", "bs"})

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
DTYPE_ALIASES = {
    "float": "float32",
    "f32": "float32",
    "fp32": "float32",
    "half": "float16",
    "f16": "float16",
    "fp16": "float16",
    "bf16": "bfloat16",
    "double": "float64",
    "f64": "float64",
    "long": "int64",
    "i64": "int64",
    "int": "int32",
    "i32": "int32",
    "bool": "bool",
}
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)
# Token ids and class indices are the usual integer inputs: a small range stays inside any vocab.
DEFAULT_INT_RANGE = (0, 100)

INPUTS_HOOK = "bisector_inputs"
# No tensor dimension comes near this; anything larger is a typo, and torch would fail on it with
# "Overflow when unpacking long long" inside the probe instead of a line here.
MAX_DIM = 2**40
NAME_RULE = "a Python identifier (letters, digits and _, not starting with a digit; e.g. x, ids, χ)"


def is_name(text: str) -> bool:
    """Input names and dim symbols: Python identifiers, unicode ones included (χ, größe)."""
    return text.isidentifier()


@dataclass(frozen=True)
class ModelSpec:
    """A model named by file and attribute: an nn.Module class, a factory, or an instance."""

    path: str  # absolute path of the .py file
    name: str  # attribute in that file (may be dotted: "factories.make")
    init_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{Path(self.path).name}:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "init_kwargs": dict(self.init_kwargs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        return cls(path=data["path"], name=data["name"], init_kwargs=dict(data.get("init_kwargs") or {}))


@dataclass(frozen=True)
class InputSpec:
    """One positional forward argument: its dims (ints or symbols), dtype and value range."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.dims if isinstance(d, str))

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def shape(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.dims)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(
            name=data["name"], dims=tuple(data["dims"]), dtype=data["dtype"], low=data.get("low"), high=data.get("high")
        )

    def __str__(self) -> str:
        text = f"{self.name}={','.join(str(d) for d in self.dims)}"
        if self.dtype != "float32" or self.low is not None:
            text += f":{self.dtype}"
        if self.low is not None:
            text += f":{_num(self.low)}:{_num(self.high)}"
        return text


@dataclass(frozen=True)
class InputPlan:
    """The inputs of one run: positional specs, a range per symbol, and whether the hook builds them."""

    inputs: tuple[InputSpec, ...]
    dims: Mapping[str, tuple[int, int]]
    use_hook: bool = False

    @property
    def dynamic_symbols(self) -> tuple[str, ...]:
        return tuple(s for s, (lo, hi) in self.dims.items() if lo != hi)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [i.to_json() for i in self.inputs],
            "dims": {k: list(v) for k, v in self.dims.items()},
            "use_hook": self.use_hook,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputPlan:
        return cls(
            inputs=tuple(InputSpec.from_json(i) for i in data["inputs"]),
            dims={k: (int(v[0]), int(v[1])) for k, v in data["dims"].items()},
            use_hook=bool(data.get("use_hook")),
        )

    def describe(self) -> str:
        if self.use_hook and not self.inputs:
            return f"{INPUTS_HOOK}()"
        return " ".join(str(i) for i in self.inputs)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------------------------------------
# Model spec


def parse_model_spec(text: str, init_kwargs: str | Mapping[str, Any] | None = None) -> ModelSpec:
    """Parse "path/to/model.py:Name", checking the file and that it defines Name."""
    path_text, sep, name = text.rpartition(":")
    if not sep or not path_text or not name:
        raise UserError(f"model spec {text!r} is not PATH.py:NAME; try e.g. model.py:Net")
    if not _DOTTED.match(name):
        raise UserError(f"model spec {text!r}: {name!r} is not a Python name; try e.g. model.py:Net")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"model file {path_text} does not exist")
    if path.is_dir() or path.suffix != ".py":
        raise UserError(f"model file {path_text} is not a .py file")
    kwargs = _parse_init_kwargs(init_kwargs)
    _check_defines(path, name.split(".")[0])
    return ModelSpec(path=str(path.resolve()), name=name, init_kwargs=kwargs)


def _parse_init_kwargs(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserError(f"--init-kwargs is not valid JSON ({exc.msg}); try '{{\"depth\": 4}}'") from None
    if not isinstance(parsed, dict):
        raise UserError("--init-kwargs must be a JSON object, e.g. '{\"depth\": 4}'")
    return parsed


def top_level_names(source: str) -> tuple[set[str], bool]:
    """Names bound at module level, and whether a star import makes the set incomplete."""
    tree = ast.parse(source)
    names: set[str] = set()
    star = False

    def bind(target: ast.AST) -> None:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                bind(elt)

    def visit(body: list[ast.stmt]) -> None:
        nonlocal star
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    bind(t)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                bind(node.target)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    names.add((a.asname or a.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name == "*":
                        star = True
                    else:
                        names.add(a.asname or a.name)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                # Names bound under `if TYPE_CHECKING`, try/except imports and the like.
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []) or [])
                for handler in getattr(node, "handlers", []) or []:
                    visit(handler.body)

    visit(tree.body)
    return names, star


def _check_defines(path: Path, name: str) -> None:
    try:
        source = read_source(path)  # as Python reads it: a BOM or a coding line is no error
    except (OSError, SourceError) as exc:
        raise UserError(f"cannot read model file {path}: {exc}") from None
    try:
        names, star = top_level_names(source)
    except SyntaxError as exc:
        raise UserError(f"{path.name}:{exc.lineno}: syntax error: {exc.msg}") from None
    if star or name in names:
        return
    candidates = sorted(n for n in names if n[:1].isupper()) or sorted(names)
    hint = f"; it defines {', '.join(candidates[:8])}" if candidates else ""
    raise UserError(f"{path.name} defines no {name!r}{hint}")


# ---------------------------------------------------------------------------------------------
# Input grammar


def parse_input(text: str) -> InputSpec:
    """Parse NAME=D1,D2,...[:DTYPE[:LOW:HIGH]]."""
    example = "try e.g. x=B,3,H,W or ids=B,T:int64:0:1000"
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(f"--input {text!r} is not NAME=DIMS[:DTYPE[:LOW:HIGH]]; {example}")
    if not is_name(name):
        raise UserError(f"--input {text!r}: the name {name!r} must be {NAME_RULE}")
    parts = rest.split(":")
    if len(parts) not in (1, 2, 4):
        raise UserError(f"--input {text!r}: expected DIMS, DIMS:DTYPE or DIMS:DTYPE:LOW:HIGH; {example}")
    dims: list[int | str] = []
    for raw in parts[0].split(","):
        raw = raw.strip()
        if _DIGITS.match(raw):
            if len(raw) > 15 or int(raw) > MAX_DIM:
                raise UserError(f"--input {text!r}: dim {raw} is too large (at most {MAX_DIM})")
            dims.append(int(raw))
        elif is_name(raw):
            dims.append(raw)
        else:
            raise UserError(f"--input {text!r}: dim {raw!r} is neither a whole number nor a symbol; {example}")
    dtype = "float32"
    if len(parts) >= 2:
        dtype = DTYPE_ALIASES.get(parts[1].strip(), parts[1].strip())
        if dtype not in ALL_DTYPES:
            raise UserError(f"--input {text!r}: unknown dtype {parts[1]!r}; use one of {', '.join(ALL_DTYPES)}")
    low = high = None
    if len(parts) == 4:
        if dtype == "bool":
            raise UserError(f"--input {text!r}: a bool input takes no LOW:HIGH")
        low, high = _value_range(text, dtype, parts[2].strip(), parts[3].strip(), example)
    return InputSpec(name=name, dims=tuple(dims), dtype=dtype, low=low, high=high)


# What torch.randint(LOW, HIGH) takes per integer dtype (HIGH is exclusive: HIGH - 1 must fit, and
# HIGH itself must fit an int64 to be passed at all), and the largest finite value of each float
# dtype (beyond it, a uniform draw is inf; float64 too, as the draw is made in float32).
INT_RANGES = {
    "int8": (-(2**7), 2**7),
    "uint8": (0, 2**8),
    "int16": (-(2**15), 2**15),
    "int32": (-(2**31), 2**31),
    "int64": (-(2**63), 2**63 - 1),
}
FLOAT_MAX = {
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
    "float32": 3.4028234663852886e38,
    "float64": 3.4028234663852886e38,
}


def _value_range(text: str, dtype: str, low_text: str, high_text: str, example: str) -> tuple[float, float]:
    """LOW:HIGH checked against the dtype now, not by torch inside the probe (exit 3 there)."""
    if dtype in INT_RANGES:
        # Whole numbers, exactly: as floats, 99999999999999999999 would round and pass.
        if not all(re.fullmatch(r"[+-]?[0-9]{1,25}", t) for t in (low_text, high_text)):
            raise UserError(f"--input {text!r}: LOW and HIGH must be numbers, whole ones for {dtype}; {example}")
        low, high = int(low_text), int(high_text)
        lo_ok, hi_ok = INT_RANGES[dtype]
        if not low < high:
            raise UserError(f"--input {text!r}: LOW must be below HIGH")
        if low < lo_ok or high > hi_ok:
            raise UserError(
                f"--input {text!r}: {low}:{high} does not fit {dtype}; values are drawn from LOW to HIGH-1, "
                f"so use LOW >= {lo_ok} and HIGH <= {hi_ok}"
            )
        return low, high  # type: ignore[return-value] - ints, exact (JSON keeps them so)
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise UserError(f"--input {text!r}: LOW and HIGH must be numbers; {example}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"--input {text!r}: LOW and HIGH must be finite numbers; {example}")
    if not low < high:
        raise UserError(f"--input {text!r}: LOW must be below HIGH")
    top = FLOAT_MAX[dtype]
    if abs(low) > top or abs(high) > top or high - low > top:
        raise UserError(f"--input {text!r}: {low:g}:{high:g} does not fit {dtype} (at most {top:g} apart and in size)")
    return low, high


def parse_dim(text: str) -> tuple[str, tuple[int, int]]:
    """Parse SYM=MIN:MAX (or SYM=N for a fixed size)."""
    sym, sep, rest = text.partition("=")
    sym = sym.strip()
    if not sep or not sym:
        raise UserError(f"--dim {text!r} is not SYM=MIN:MAX; try e.g. B=1:16")
    if not is_name(sym):
        raise UserError(f"--dim {text!r}: the symbol {sym!r} must be {NAME_RULE}")
    lo_text, colon, hi_text = rest.partition(":")
    if not _DIGITS.match(lo_text.strip()) or (colon and not _DIGITS.match(hi_text.strip())):
        raise UserError(f"--dim {text!r}: MIN and MAX must be whole numbers; try e.g. H=32:256")
    if max(len(lo_text.strip()), len(hi_text.strip())) > 15:  # int() refuses 4,300 digits and more
        raise UserError(f"--dim {text!r}: too large (at most {MAX_DIM})")
    lo = int(lo_text)
    hi = int(hi_text) if colon else lo
    if lo < 1 or hi < lo:
        raise UserError(f"--dim {text!r}: need 1 <= MIN <= MAX")
    if hi > MAX_DIM:
        raise UserError(f"--dim {text!r}: MAX is too large (at most {MAX_DIM})")
    return sym, (lo, hi)


def default_range(symbol: str) -> tuple[int, int]:
    return DEFAULT_BATCH_RANGE if symbol in BATCH_SYMBOLS else DEFAULT_DIM_RANGE


def build_input_plan(
    inputs: list[str] | tuple[str, ...],
    dims: list[str] | tuple[str, ...] = (),
    model: ModelSpec | None = None,
) -> InputPlan:
    """Resolve --input and --dim into a plan; symbols without --dim take the default ranges."""
    specs = tuple(parse_input(t) for t in inputs)
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"--input names must differ; {', '.join(sorted(dup))} given twice")
    ranges: dict[str, tuple[int, int]] = {}
    for text in dims:
        sym, rng = parse_dim(text)
        ranges[sym] = rng
    used = [s for spec in specs for s in spec.symbols]
    resolved: dict[str, tuple[int, int]] = {}
    for sym in dict.fromkeys(used):
        resolved[sym] = ranges.get(sym, default_range(sym))
    use_hook = model is not None and model_has_inputs_hook(model)
    unused = [s for s in ranges if s not in resolved]
    if unused and not use_hook:
        raise UserError(f"--dim {', '.join(unused)}: no --input uses that symbol")
    for sym in unused:  # the hook receives every declared symbol
        resolved[sym] = ranges[sym]
    if not specs and not use_hook:
        hint = f"; or define {INPUTS_HOOK}(dims, rng) in the model file" if model else ""
        raise UserError(f"no inputs given; add --input NAME=DIMS, e.g. --input x=B,3,H,W{hint}")
    return InputPlan(inputs=specs, dims=resolved, use_hook=use_hook)


DTYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


def largest_input_bytes(plan: InputPlan) -> tuple[int, str]:
    """Bytes of the --input tensors at the top of every range, and the shapes, as text: what one
    call at the largest shape needs before the model allocates anything of its own. (Inputs a
    bisector_inputs hook builds are not known here.)"""
    total = 0
    shapes = []
    for spec in plan.inputs:
        shape = [d if isinstance(d, int) else plan.dims.get(d, default_range(d))[1] for d in spec.dims]
        n = DTYPE_BYTES.get(spec.dtype, 8)
        for d in shape:
            n *= d
        total += n
        shapes.append(f"{spec.name}={','.join(str(d) for d in shape)}:{spec.dtype}")
    return total, " ".join(shapes)


def model_has_inputs_hook(model: ModelSpec) -> bool:
    try:
        names, _ = top_level_names(read_source(model.path))
    except (OSError, SyntaxError, SourceError):
        return False
    return INPUTS_HOOK in names


def library_imports(model: ModelSpec) -> tuple[str, ...]:
    """Installed third-party modules the model file imports at top level, for the probe server
    to import before forking ("pkg" or "pkg:Attr" for a lazily loaded attribute, as in
    `from transformers import GPT2Model`). The user's own modules are never included."""

    path = Path(model.path)
    try:
        tree = ast.parse(read_source(path))
    except (OSError, SyntaxError, SourceError):
        return ()
    wanted: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            wanted += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            wanted += [f"{node.module}:{a.name}" for a in node.names if a.name != "*"]
    out: list[str] = []
    local = path.parent.resolve()
    for entry in wanted:
        top = entry.split(":")[0].split(".")[0]
        if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
            continue
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        origin = getattr(found, "origin", None) or ""
        locations = list(getattr(found, "submodule_search_locations", None) or [])
        where = [Path(p).resolve() for p in ([origin] if origin and origin != "namespace" else []) + locations]

        def is_local(w: Path) -> bool:
            installed = any(part in ("site-packages", "dist-packages") for part in w.parts)
            return not installed and (local == w or local in w.parents)

        if found is None or not where or any(is_local(w) for w in where):
            continue
        out.append(entry)
    return tuple(dict.fromkeys(out))
