"""Input inference, child side: every source on fixture models (tests/fixtures/inference*.py),
checked by real forwards; and the child process itself: an answer, a timeout, a crash."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bisector.common.errors import UserError
from bisector.find.infer_inputs import infer
from bisector.model.spec import DEFAULT_BATCH_RANGE, DEFAULT_DIM_RANGE, ModelSpec
from tests.conftest import FIXTURES, SAMPLES

pytestmark = pytest.mark.probe
B = list(DEFAULT_BATCH_RANGE)
SIZE = list(DEFAULT_DIM_RANGE)


Ranges = dict[str, tuple[int, int]]


def in_process(name: str, file: str = "inference.py", given: Ranges | None = None) -> dict[str, Any]:
    """The child's answer, computed here: one torch import for all these tests instead of one each."""
    from bisector.probe.infer_child import infer as child_infer

    return child_infer(ModelSpec(path=str(FIXTURES / file), name=name), given or {})


def test_an_example_inputs_attribute_gives_every_input_with_its_dtype_and_values() -> None:
    got = in_process("WithExampleInputs")
    assert got["inputs"] == ["x=B,6", "ids=B,3:int64:0:5"]
    assert got["dims"] == {"B": B} and got["source"] == "WithExampleInputs.example_inputs"


def test_a_dummy_input_method_returning_a_dict_follows_forwards_names() -> None:
    got = in_process("WithDummyInputMethod")
    assert got["inputs"] == ["image=B,3,16,16"] and got["source"] == "WithDummyInputMethod.dummy_input()"


@pytest.mark.parametrize(
    ("name", "inputs", "dims", "source"),
    [
        ("Signal1d", ["x=B,2,L"], {"B": B, "L": SIZE}, "conv: Conv1d(2, 4)"),
        ("Volume", ["x=B,1,D,H,W"], {"B": B, "D": SIZE, "H": SIZE, "W": SIZE}, "conv: Conv3d(1, 2)"),
        # Channels last, turned around in forward before the conv: tried when channels first is refused.
        ("ChannelsLast1d", ["feats=B,L,6"], {"B": B, "L": SIZE}, "conv: Conv1d(6, 4), channels last"),
        ("ChannelsLast2d", ["img=B,H,W,3"], {"B": B, "H": SIZE, "W": SIZE}, "conv: Conv2d(3, 4), channels last"),
        ("BatchFirstLSTM", ["x=B,T,6"], {"B": B, "T": SIZE}, "rnn: LSTM(6, 8, batch_first=True)"),
        ("TimeFirstGRU", ["seq=T,B,6"], {"T": SIZE, "B": B}, "rnn: GRU(6, 8, batch_first=False)"),
        ("Encoder", ["x=B,T,16"], {"B": B, "T": SIZE}, "encoder: TransformerEncoder(d_model=16, batch_first=True)"),
        ("ShortPositions", ["ids=B,T:int64:0:50"], {"B": B, "T": [5, 32]}, "tokens: Embedding(50, 8)"),
        ("scripted", ["input=B,12"], {"B": B}, "0: Linear(12, 4)"),
    ],
)
def test_the_first_layer_says_what_it_takes(name: str, inputs: list[str], dims: dict[str, Any], source: str) -> None:
    got = in_process(name)
    assert (got["inputs"], got["dims"], got["source"]) == (inputs, dims, source)


def test_call_order_wins_over_registration_order() -> None:
    got = in_process("HeadFirst")
    assert got["inputs"] == ["x=B,3,H,W"] and got["source"] == "stem: Conv2d(3, 16)"
    assert any(t.startswith("first layer head: Linear(16, 4): a forward with x=1,16 raised") for t in got["tried"])


def test_sizes_move_only_where_a_forward_refuses_them() -> None:
    pools = in_process("PoolsFiveTimes")
    assert pools["dims"] == {"B": B, "H": [32, 100], "W": [32, 100]}  # five halvings need 32
    one = in_process("OneSize")
    assert one["dims"] == {"B": B, "H": [16, 16], "W": [16, 16]}  # the position table takes 16 only


def test_a_batch_of_one_refused_starts_the_batch_at_two() -> None:
    got = in_process("SqueezesTheBatch")
    assert got["inputs"] == ["x=B,8"] and got["dims"] == {"B": [2, 16]}


def test_the_users_dims_are_kept() -> None:
    got = in_process("PoolsFiveTimes", given={"H": (64, 64), "B": (2, 3)})
    assert got["dims"] == {"B": [2, 3], "H": [64, 64], "W": [32, 100]}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("TwoInputs", "first layer: forward takes 2 inputs (x, y); a first layer tells only one"),
        (
            "NoKnownLayer",
            "first layer: no Conv1d/2d/3d, Linear, Embedding, LSTM/GRU/RNN or TransformerEncoder in the model",
        ),
    ],
)
def test_what_cannot_be_inferred_says_what_was_tried(name: str, why: str) -> None:
    got = in_process(name)
    assert got["inputs"] == []
    before = [f"example_inputs/dummy_input: {name} has neither", f"transformers: {name} is not a PreTrainedModel"]
    assert got["tried"] == [*before, why]


@pytest.mark.parametrize(
    ("factory", "inputs", "dims", "source"),
    [
        (
            "gpt2",
            ["input_ids=B,T:int64:0:100"],
            {"B": B, "T": [5, 64]},
            "GPT2Model: input_ids, vocab_size=100, max_position_embeddings=64",
        ),
        (
            "bert",
            ["input_ids=B,T:int64:0:100"],
            {"B": B, "T": SIZE},
            "BertModel: input_ids, vocab_size=100, max_position_embeddings=128",
        ),
        ("vit", ["pixel_values=B,3,32,32"], {"B": B}, "ViTModel: pixel_values, num_channels=3, image_size=32"),
    ],
)
def test_a_transformers_model_says_it_in_its_config(factory: str, inputs: list[str], dims: Any, source: str) -> None:
    pytest.importorskip("transformers")
    got = in_process(factory, "inference_hf.py")
    assert (got["inputs"], got["dims"], got["source"]) == (inputs, dims, source)


def test_the_child_process_answers_with_flags() -> None:
    found = infer(ModelSpec(path=str(SAMPLES / "list_append.py"), name="Net"))
    assert found.describe() == "inputs inferred: --input x=B,32 (from blocks.0: Linear(32, 32))"


def test_a_model_that_cannot_be_built_is_one_error() -> None:
    said = r"^no inputs given, and inferring them failed: building crashers.py:RaisingCtor raised"
    with pytest.raises(UserError, match=said):
        infer(ModelSpec(path=str(FIXTURES / "crashers.py"), name="RaisingCtor"))


def test_a_crashing_child_is_an_error_not_a_traceback() -> None:
    with pytest.raises(UserError, match=r"inferring them failed: the child that builds the model crashed \(signal 6\)"):
        infer(ModelSpec(path=str(FIXTURES / "inference.py"), name="DiesWhileBuilt"))


def test_a_hanging_child_is_stopped_at_the_timeout() -> None:
    started = time.monotonic()
    # A short timeout: the model never finishes building, so the child is stopped wherever it is.
    with pytest.raises(UserError, match=r"inferring them failed: the child that builds the model took more than 3 s"):
        infer(ModelSpec(path=str(FIXTURES / "inference.py"), name="SlowToBuild"), timeout_s=3)
    assert time.monotonic() - started < 20
