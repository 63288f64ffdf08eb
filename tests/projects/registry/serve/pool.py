"""A pool that builds each model's ONNX Runtime session the first time it is asked for; a model
that has no ONNX file yet (convert.py skipped it) is served with torch meanwhile.

`python serve/pool.py` serves a few requests of varying sizes for every registered model."""

import importlib
import os
import sys

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "artifacts")
sys.path.insert(0, ROOT)

from registry import REGISTRY  # noqa: E402

# Request sizes as production sends them: the denoiser gets photos of any size.
REQUESTS = {"denoiser": [(1, 3, 32, 48), (2, 3, 64, 40), (1, 3, 20, 20)]}


class SessionPool:
    def __init__(self, directory=ARTIFACTS):
        self.directory = directory
        self.sessions = {}

    def get(self, name):
        if name not in self.sessions:
            path = os.path.join(self.directory, name + ".onnx")
            if os.path.exists(path):
                self.sessions[name] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            else:
                self.sessions[name] = eager(name)
        return self.sessions[name]

    def predict(self, name, batch):
        session = self.get(name)
        if not isinstance(session, ort.InferenceSession):
            return session(batch)
        return session.run(None, {session.get_inputs()[0].name: batch})[0]


def eager(name):
    """A model convert.py could not convert yet, run with torch: numpy in, numpy out."""
    import torch

    module, cls, _ = REGISTRY[name]
    model = getattr(importlib.import_module(module), cls)().eval()

    def run(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    return run


def main():
    pool = SessionPool()
    rng = np.random.default_rng(0)
    for name, (_, _, shape) in REGISTRY.items():
        for size in REQUESTS.get(name) or [(b, *shape[1:]) for b in (1, 3, 2)]:
            batch = rng.standard_normal(size, dtype=np.float32)
            print(name, pool.predict(name, batch).shape)


if __name__ == "__main__":
    main()
