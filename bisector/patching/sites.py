"""Where a serving script builds one model's session: its ``InferenceSession(...)`` calls, each with
the model key its path names (bisector.patching.flow), and the sessions that serve a given model.

A literal path (``"artifacts/tagger.onnx"``) serves one model; a path built from a variable
(``os.path.join(DIR, name + ".onnx")``) serves every model, keyed by that variable. A path the flow
cannot trace to a model's name is reported with why, never keyed by a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from bisector.patching.cst_edits import code_of, dotted
from bisector.patching.flow import Flow, Key

SESSION_WRAPPER = "_bisector_session"  # bisector's own call around a user's InferenceSession(...)


@dataclass(frozen=True)
class Site:
    """One `InferenceSession(...)` call in a script."""

    line: int
    key: Key
    wrapped: str | None = None  # the key bisector's wrapper already passes (its code), if wrapped
    node: Any = field(default=None, compare=False, repr=False)  # the call, in the Flow's module
    path: str = ""  # the path expression as written

    @property
    def literal(self) -> str | None:
        """The model's key when the path names one model's file."""
        return self.key.literal

    @property
    def key_code(self) -> str:
        """The expression naming the model at the site: the variable, or the literal; "" unproven."""
        if self.key.code is not None:
            return self.key.code
        return repr(self.key.literal) if self.key.literal is not None else ""


@dataclass(frozen=True)
class Placement:
    """The sessions that get one model's settings, and the key the table holds them under."""

    sites: tuple[Site, ...] = ()
    table_key: str = ""
    unproven: tuple[Site, ...] = ()  # no proven site: the sessions whose model bisector cannot tell
    note: str = ""

    @property
    def shared(self) -> bool:
        """The settings are looked up by a variable (the session code serves several models)."""
        return bool(self.unproven) or any(s.literal is None for s in self.sites)


def _session_path_arg(call: cst.Call) -> Any:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "path_or_bytes":
            return a.value
    positional = [a for a in call.args if a.keyword is None]
    return positional[0].value if positional else None


def find_sites(source: str | Flow) -> list[Site]:
    """Every InferenceSession call, with what names its model."""
    flow = source if isinstance(source, Flow) else Flow(source)
    sites: list[Site] = []
    for call in flow.calls():
        if not dotted(call.func).endswith("InferenceSession"):
            continue
        parent = flow.parents.get(flow.parents.get(call))
        wrapped = None
        if isinstance(parent, cst.Call) and dotted(parent.func) == SESSION_WRAPPER and len(parent.args) >= 2:
            wrapped = code_of(parent.args[1].value)
        path = _session_path_arg(call)
        key = flow.key_of(path) if path is not None else Key(why="the session is built from no path")
        line = flow.positions[call].start.line
        sites.append(Site(line, key, wrapped, call, code_of(path) if path is not None else ""))
    return sites


def place(source: str | Flow, key: str) -> Placement:
    """The sessions that serve the model named key: those loading its own file, else those keyed
    by the variable that carries the name; the only session of a script that loads one file; else
    the sessions the flow cannot trace (for a note and a comment), never a guess."""
    sites = find_sites(source)
    if not sites:
        return Placement(note="no onnxruntime.InferenceSession(...) found")
    mine = tuple(s for s in sites if s.literal == key)
    if mine:
        return Placement(mine, key)
    shared = tuple(s for s in sites if s.key.code is not None)
    if shared:
        return Placement(shared, shared[0].key.table_key(key))
    if len(sites) == 1 and sites[0].literal is not None:
        # A script serving one file: the model it was given for (`model.onnx` keys its entry "model").
        return Placement(tuple(sites), sites[0].literal)
    unproven = tuple(s for s in sites if not s.key.proven)
    if unproven:
        where = "; ".join(f"line {s.line}: {s.key.why}" for s in unproven)
        return Placement(
            table_key=key,
            unproven=unproven,
            note=f"no session is traced to {key}'s name ({where}); its settings are in the table "
            "_BISECTOR_SESSIONS: pass the model's name as the key where the comment there says",
        )
    lines = ", ".join(str(s.line) for s in sites)
    return Placement(
        note=f"no session loading {key}.onnx found (sessions at lines {lines}); "
        'name the model\'s artifact with `artifact = "..."`'
    )


def site_for(source: str, key: str) -> tuple[Site | None, str]:
    """The (first) session that serves the model named key, and a note when there is none."""
    p = place(source, key)
    return (p.sites[0] if p.sites else None), p.note
