"""summary.md: the repair summary as a Markdown table, one row per model (what `bisector repair`
prints too)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bisector.common.units import format_bytes
from bisector.model.kinds import Kind
from bisector.pipeline.run import with_stage_errors

HEADER = (
    "| model | status | verdict | stages | culprits | chosen fix | growth before -> after | trade-off "
    "| patch | check |",
    "|---|---|---|---|---|---|---|---|---|---|",
)


def summary_table(results: Iterable[Any]) -> str:
    """The table over results.ModelResult rows."""
    return "\n".join([*HEADER, *(_row(r) for r in results)]) + "\n"


def _row(r: Any) -> str:
    culprits = ", ".join(f"`{c['region'] or '<root>'}` ({c['stage']} {c['kind']}{_site(c)})" for c in r.culprits) or "-"
    fixes = (
        "; ".join(
            k["fixer"] + (f" (removes behaviour: {k['removes_behaviour']})" if k.get("removes_behaviour") else "")
            for k in r.kept
        )
        or "-"
    )
    change = "; ".join(_change(k, format_bytes) for k in r.kept) or "-"
    trade = "; ".join(_trade(k, format_bytes) for k in r.kept) or "-"
    patch = ", ".join(f"[{n}](patches/{n})" for n in r.patches) or "no patch"
    status = with_stage_errors(r.status, r.stage_errors) + (f": {r.error}" if r.error else "")
    return (
        f"| `{r.spec}` | {status} | {r.verdict or '-'} | {r.stages_text()} | {culprits} | {fixes} | {change} | "
        f"{trade} | {patch} | {r.check or '-'} |"
    )


def _site(c: Mapping[str, Any]) -> str:
    return f", hook registered at {c['registered_at']}" if c.get("registered_at") else ""


def _trade(k: Mapping[str, Any], fmt: Any) -> str:
    """Upfront bytes, and the largest RSS over the declared range without -> with the fix."""
    parts = []
    if k.get("upfront_bytes") is not None:
        parts.append(f"upfront {fmt(k['upfront_bytes'], True)}")
    if k.get("steady_before_bytes") is not None and k.get("steady_after_bytes") is not None:
        parts.append(f"steady {fmt(k['steady_before_bytes'])} -> {fmt(k['steady_after_bytes'])}")
    if k.get("costs_more_than_it_saves"):
        parts.append("costs more up front than it saves")
    return ", ".join(parts) or "-"


def _change(k: Mapping[str, Any], fmt: Any) -> str:
    """The figure the fix was judged on, before -> after (a clean verdict reads as 0)."""
    unit = k.get("judged_on", "bytes/call")
    clean = k.get("after_kind") == Kind.CLEAN
    if unit == "objects/call":
        return (
            f"{k.get('before_objects_per_call') or 0:+.0f} -> "
            f"{0 if clean else k.get('after_objects_per_call') or 0:+.0f} objects/call"
        )
    if unit == "objects/new shape":
        return (
            f"{k.get('before_objects_per_new_shape') or 0:+.0f} -> "
            f"{0 if clean else k.get('after_objects_per_new_shape') or 0:+.0f} objects/new shape"
        )
    if unit == "bytes/call":
        return (
            f"{fmt(k.get('before_bytes_per_call'), True)} -> "
            f"{'0 B' if clean else fmt(k.get('after_bytes_per_call'), True)}/call"
        )
    return (
        f"{fmt(k.get('before_bytes_per_new_shape'), True)} -> "
        f"{'0 B' if clean else fmt(k.get('after_bytes_per_new_shape'), True)}/new shape"
    )
