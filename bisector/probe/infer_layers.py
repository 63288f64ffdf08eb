"""What a model's first layer says about its input (child side: needs torch).

Each rule reads only what the layer states for certain: a Conv2d's in_channels, a Linear's
in_features, an Embedding's num_embeddings, a recurrent layer's input_size and batch_first. Sizes
the layer does not fix get symbols (B for batch, H/W, L, D, T) whose ranges the caller checks with
a forward. Scripted modules (torch.jit.script) are matched by their original class name, since
they are no longer instances of the nn classes but keep the attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Layer kinds by class name, for the isinstance-free match of scripted modules.
CONV_SPATIAL = {"Conv1d": ("L",), "Conv2d": ("H", "W"), "Conv3d": ("D", "H", "W")}
RECURRENT = ("LSTM", "GRU", "RNN")


@dataclass(frozen=True)
class LayerGuess:
    """The input a layer takes: dims (ints and symbols), dtype, value range, and how to say where it came from."""

    dims: tuple[int | str, ...]
    text: str  # e.g. "Conv2d(3, 16)"
    dtype: str = "float32"
    low: int | None = None
    high: int | None = None
    # The same input in another layout the model may turn into this one before the layer: a
    # convolution's channels last ((batch, frames, mel bins) audio features, (B, H, W, C) images),
    # tried when the layout the layer takes is refused.
    alternate: tuple[int | str, ...] | None = None


def kind_of(module: Any) -> str:
    """The nn class a module is, or derives from, among the known first layers ("" if none)."""
    name = getattr(module, "original_name", None)  # a RecursiveScriptModule keeps its class name here
    if isinstance(name, str) and name in _RULES:
        return name
    for cls in type(module).__mro__:
        if cls.__name__ in _RULES and cls.__module__.startswith("torch.nn"):
            return cls.__name__
    return ""


def layer_guess(module: Any) -> LayerGuess | None:
    """The input `module` takes when it is the first layer to see the model's input; None if it
    is none of the known layers or does not say enough (a lazy layer with no sizes yet)."""
    kind = kind_of(module)
    if not kind:
        return None
    try:
        return _RULES[kind](module, kind)
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def _conv(m: Any, kind: str) -> LayerGuess | None:
    channels = int(m.in_channels)
    if channels <= 0:  # LazyConv before its first call
        return None
    spatial = CONV_SPATIAL[kind]
    return LayerGuess(
        dims=("B", channels, *spatial),
        text=f"{kind}({channels}, {int(m.out_channels)})",
        alternate=("B", *spatial, channels),
    )


def _linear(m: Any, kind: str) -> LayerGuess | None:
    features = int(m.in_features)
    if features <= 0:  # LazyLinear
        return None
    return LayerGuess(dims=("B", features), text=f"{kind}({features}, {int(m.out_features)})")


def _embedding(m: Any, kind: str) -> LayerGuess:
    n = int(m.num_embeddings)
    # Token ids: any id below num_embeddings is valid, so that is the range, not a guess.
    return LayerGuess(dims=("B", "T"), dtype="int64", low=0, high=n, text=f"{kind}({n}, {int(m.embedding_dim)})")


def _recurrent(m: Any, kind: str) -> LayerGuess:
    size = int(m.input_size)
    first = bool(m.batch_first)
    dims: tuple[int | str, ...] = ("B", "T", size) if first else ("T", "B", size)
    return LayerGuess(dims=dims, text=f"{kind}({size}, {int(m.hidden_size)}, batch_first={first})")


def _encoder(m: Any, kind: str) -> LayerGuess:
    layer = m.layers[0] if kind == "TransformerEncoder" else m
    d_model = int(layer.self_attn.embed_dim)
    first = bool(layer.self_attn.batch_first)
    dims: tuple[int | str, ...] = ("B", "T", d_model) if first else ("T", "B", d_model)
    return LayerGuess(dims=dims, text=f"{kind}(d_model={d_model}, batch_first={first})")


_RULES: dict[str, Callable[[Any, str], LayerGuess | None]] = {
    **{k: _conv for k in CONV_SPATIAL},
    "Linear": _linear,
    "Embedding": _embedding,
    **{k: _recurrent for k in RECURRENT},
    "TransformerEncoder": _encoder,
    "TransformerEncoderLayer": _encoder,
}
