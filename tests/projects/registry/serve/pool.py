"""A pool that builds each model's ONNX Runtime session the first time it is asked for.

`python serve/pool.py` serves a few requests of varying sizes for every registered model."""

import os
import sys

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "artifacts")
sys.path.insert(0, ROOT)

from registry import REGISTRY  # noqa: E402


class SessionPool:
    def __init__(self, directory=ARTIFACTS):
        self.directory = directory
        self.sessions = {}

    def get(self, name):
        if name not in self.sessions:
            path = os.path.join(self.directory, name + ".onnx")
            self.sessions[name] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return self.sessions[name]

    def predict(self, name, batch):
        session = self.get(name)
        return session.run(None, {session.get_inputs()[0].name: batch})[0]


def main():
    pool = SessionPool()
    rng = np.random.default_rng(0)
    for name, (_, _, shape) in REGISTRY.items():
        for b in (1, 3, 2):
            batch = rng.standard_normal((b, *shape[1:]), dtype=np.float32)
            print(name, pool.predict(name, batch).shape)


if __name__ == "__main__":
    main()
