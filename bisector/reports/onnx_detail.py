"""What an exported graph is made of, and where ONNX Runtime spends its time running it.

For export and inference culprits the report shows the exported region's op-type histogram and
node count, and for inference one profiled ONNX Runtime run summarised as the top nodes and op
types by time. Upstream maintainers ask for exactly these when a graph leaks or grows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OpHistogram:
    nodes: int
    ops: Mapping[str, int]  # "domain::Op" for custom domains, "Op" for the default one
    functions: int = 0  # local functions (the torch.export-based exporter emits them)

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "ops": dict(self.ops), "functions": self.functions}


@dataclass(frozen=True)
class ProfileSummary:
    total_us: int
    runs: int
    top_nodes: tuple[Mapping[str, Any], ...] = ()  # {"name", "op", "us", "share"}
    top_ops: tuple[Mapping[str, Any], ...] = ()  # {"op", "us", "count", "share"}
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "total_us": self.total_us,
            "runs": self.runs,
            "top_nodes": [dict(n) for n in self.top_nodes],
            "top_ops": [dict(o) for o in self.top_ops],
            "notes": list(self.notes),
        }


def _walk_nodes(graph: Any) -> Iterable[Any]:
    """Every node, including those in If/Loop/Scan bodies: a leak in a branch counts too."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _walk_nodes(attr.g)
            for g in attr.graphs:
                yield from _walk_nodes(g)


def op_histogram(model: Any) -> OpHistogram:
    """Op types of a ModelProto (or a path to a .onnx), most frequent first. Nodes inside local
    functions are counted where the function is defined, once, since that is what the file holds."""
    import onnx  # noqa: PLC0415 - onnx only when a report details a graph

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    counts: Counter[str] = Counter()
    nodes = 0
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in _walk_nodes(g):
            nodes += 1
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return OpHistogram(nodes=nodes, ops=ordered, functions=len(model.functions))


def profile_summary(events: Any, top: int = 10) -> ProfileSummary:
    """Summarise an ONNX Runtime profile (the JSON list written with enable_profiling, or a path
    to it): node kernel times by node and by op type. Only "Node" events with a "_kernel_time"
    name are kernels; fence and session events would count the same time twice."""
    if isinstance(events, (str, Path)):
        events = json.loads(Path(events).read_text())
    by_node: dict[str, list[Any]] = {}
    by_op: dict[str, list[int]] = {}
    runs = 0
    for e in events:
        if not isinstance(e, Mapping):
            continue
        name = str(e.get("name", ""))
        if e.get("cat") == "Session" and name == "model_run":
            runs += 1
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        dur = int(e.get("dur") or 0)
        node = name[: -len("_kernel_time")]
        op = str((e.get("args") or {}).get("op_name") or "?")
        entry = by_node.setdefault(node, [op, 0])
        entry[1] += dur
        acc = by_op.setdefault(op, [0, 0])
        acc[0] += dur
        acc[1] += 1
    total = sum(us for _, us in by_node.values())

    def share(us: float) -> float:
        return round(us / total, 4) if total else 0.0

    nodes = sorted(by_node.items(), key=lambda kv: -kv[1][1])[:top]
    ops = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
    notes = () if by_node else ("the profile holds no node kernel events",)
    return ProfileSummary(
        total_us=total,
        runs=runs,
        top_nodes=tuple({"name": n, "op": op, "us": us, "share": share(us)} for n, (op, us) in nodes),
        top_ops=tuple({"op": op, "us": us, "count": count, "share": share(us)} for op, (us, count) in ops),
        notes=notes,
    )


def profile_run(
    onnx_path: str | Path, feeds: Mapping[str, Any], out_dir: str | Path, runs: int = 5, providers: Any = None
) -> tuple[Path, ProfileSummary]:
    """Run the graph `runs` times with ONNX Runtime's profiler on; the profile JSON lands in
    out_dir as profile.json (ORT names it with a timestamp; renamed so a bundle is predictable)."""
    import onnxruntime as ort  # noqa: PLC0415 - onnxruntime only when a report details a graph

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(out_dir / "ort_profile")
    sess = ort.InferenceSession(str(onnx_path), so, providers=providers or ["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, dict(feeds))
    written = Path(sess.end_profiling())
    target = out_dir / "profile.json"
    written.replace(target)
    return target, profile_summary(target)
