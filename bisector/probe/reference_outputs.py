"""The original model's ONNX Runtime outputs, kept once per run for every fix candidate's
equivalence probe (probe/equivalence.py).

Every candidate of a culprit is compared with the same reference: the original model, exported
with the original options, run on the same inputs. Exporting it costs as much as exporting the
candidate (a dynamo export with dynamic dims takes seconds), so the first equivalence probe of a
run stores the outputs it got, and later ones read them instead of exporting the original again.

What is stored is only trusted for the same model: a later probe compares a digest of its own
original's weights and of the inputs with the stored ones, and computes the reference itself when
either differs (a model drawing weights from an unseeded source, a weights file changed between
runs). Outputs over STORE_LIMIT are not stored (a language model's logits at four shapes can
reach hundreds of MB): each probe then exports the original itself, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reference:
    """The original's outputs at each input (a list of arrays per input), whether they came from
    ONNX Runtime (else from the eager forward: the original does not export), and where the
    original's exported file lies when this probe made it (None when read from the store)."""

    outputs: list[list[Any]]
    onnx: bool
    exported: Path | None = None
    how: str = "read"  # read (from the store), stored (made by this probe and kept), made (not kept)


def digest(model: Any, inputs: list[tuple[Any, Any]]) -> str:
    """A digest of the model's weights (state_dict: parameters and buffers) and of the inputs."""
    import torch
    from torch.utils import _pytree as pytree

    h = hashlib.sha256()

    def add(name: str, t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor):
            add(name, t)
    for i, leaf in enumerate(pytree.tree_leaves(inputs)):
        if isinstance(leaf, torch.Tensor):
            add(f"input{i}", leaf)
        else:
            h.update(f"input{i}:{leaf!r}".encode())
    return h.hexdigest()


def load(path: str, expected: str) -> Reference | None:
    """The stored reference when its digest is the expected one, else None."""
    if not path:
        return None
    try:
        import numpy as np

        meta = json.loads(Path(path + ".json").read_text())
        if meta.get("digest") != expected:
            return None
        with np.load(path, allow_pickle=False) as data:
            if str(data["digest"]) != expected:  # arrays written for another model meanwhile
                return None
            outputs = [[data[f"o{i}_{j}"] for j in range(n)] for i, n in enumerate(meta["counts"])]
        return Reference(outputs=outputs, onnx=bool(meta["onnx"]))
    except (OSError, ValueError, KeyError):
        return None


def store(path: str, expected: str, ref: Reference) -> bool:
    """Keep the reference for later probes (atomically: a probe reading it sees all of it or
    nothing); False when there is no place for it or it is over STORE_LIMIT."""
    if not path or sum(getattr(a, "nbytes", 0) for row in ref.outputs for a in row) > STORE_LIMIT:
        return False
    import numpy as np

    arrays = {f"o{i}_{j}": a for i, row in enumerate(ref.outputs) for j, a in enumerate(row)}
    arrays["digest"] = np.array(expected)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        meta = {"digest": expected, "onnx": ref.onnx, "counts": [len(row) for row in ref.outputs]}
        Path(f"{tmp}.json").write_text(json.dumps(meta))
        # The arrays first, then the meta: a reader never sees a meta whose arrays are not there
        # yet, and both carry the digest (a pair from two writers fails it and is redone).
        os.replace(tmp, target)
        os.replace(f"{tmp}.json", f"{path}.json")
    except OSError:
        return False
    return True
