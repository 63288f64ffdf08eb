"""Serve every model of the catalog service from artifacts/ with ONNX Runtime.

`python serve/serve.py` runs each model on a few requests of varying sizes, as production does.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class Predictor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.session = ort.InferenceSession(str(ARTIFACTS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def requests(name: str, rng: np.random.Generator) -> list:
    if name == "tagger":
        return [rng.standard_normal((b, 3, 16, 16), dtype=np.float32) for b in (1, 4, 2)]
    if name == "encoder":
        return [rng.integers(0, 500, (b, t), dtype=np.int64) for b, t in ((1, 5), (3, 12), (2, 30))]
    if name == "ranker":
        return [rng.standard_normal((b, 4), dtype=np.float32) for b in (1, 8, 5)]
    return [rng.standard_normal((1, 3, h, w), dtype=np.float32) for h, w in ((32, 48), (64, 40), (20, 20))]


def main() -> None:
    rng = np.random.default_rng(0)
    for name in ("tagger", "encoder", "ranker", "heatmap"):
        predictor = Predictor(name)
        shapes = [predictor(batch).shape for batch in requests(name, rng)]
        print(name, shapes)


if __name__ == "__main__":
    main()
