"""The exported graph's op histogram and the ONNX Runtime profile summary, on a small sample graph."""

from __future__ import annotations

import json

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from bisector.reports.onnx_detail import op_histogram, profile_run, profile_summary  # noqa: E402


def sample_graph() -> onnx.ModelProto:
    """x -> MatMul -> Add -> Relu -> If(then: Relu, else: Neg) -> Relu, plus a custom-domain node."""
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["r"], ["t_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("ReduceSum", ["r"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y0"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["y0"], ["y"], name="relu2"),
    ]
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.1] * 16),
        helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "sample",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_histogram_counts_every_node_including_subgraphs_most_frequent_first(tmp_path) -> None:
    model = sample_graph()
    model.graph.node.append(helper.make_node("Scale", ["y"], ["z"], domain="com.example"))
    hist = op_histogram(model)
    assert hist.nodes == 10
    assert list(hist.ops.items())[0] == ("Relu", 3)  # two in the graph, one in a branch
    assert hist.ops["Neg"] == 1 and hist.ops["If"] == 1 and hist.ops["com.example::Scale"] == 1
    path = tmp_path / "g.onnx"
    onnx.save(sample_graph(), path)
    assert op_histogram(path).to_json()["nodes"] == 9


def test_profile_summary_ranks_kernels_by_time_and_ignores_other_events() -> None:
    events = [
        {"cat": "Session", "name": "model_run", "dur": 900},
        {"cat": "Session", "name": "model_run", "dur": 800},
        {"cat": "Node", "name": "mm_kernel_time", "dur": 300, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "mm_kernel_time", "dur": 200, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "relu_kernel_time", "dur": 100, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "relu2_kernel_time", "dur": 150, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "mm_fence_before", "dur": 999, "args": {"op_name": "MatMul"}},
    ]
    s = profile_summary(events, top=2)
    assert s.runs == 2 and s.total_us == 750
    assert [n["name"] for n in s.top_nodes] == ["mm", "relu2"] and s.top_nodes[0]["us"] == 500
    assert s.top_ops[0] == {"op": "MatMul", "us": 500, "count": 2, "share": round(500 / 750, 4)}
    assert s.top_ops[1]["op"] == "Relu" and s.top_ops[1]["count"] == 2
    assert profile_summary([]).notes == ("the profile holds no node kernel events",)


def test_profile_run_keeps_the_profile_json_and_summarises_it(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import numpy as np

    path = tmp_path / "g.onnx"
    onnx.save(sample_graph(), path)
    profile, summary = profile_run(path, {"x": np.ones((3, 4), dtype=np.float32)}, tmp_path / "bundle", runs=3)
    assert profile == tmp_path / "bundle" / "profile.json"
    assert isinstance(json.loads(profile.read_text()), list)
    assert summary.runs == 3
    # Kernels as ONNX Runtime ran them (it may fuse MatMul+Add): each op ran once per run.
    ops = {o["op"]: o for o in summary.top_ops}
    assert "If" in ops and ops["If"]["count"] == 3 and ops["ReduceSum"]["count"] == 3
    assert summary.total_us == sum(o["us"] for o in summary.top_ops)
    assert [n["us"] for n in summary.top_nodes] == sorted((n["us"] for n in summary.top_nodes), reverse=True)
