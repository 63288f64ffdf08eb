"""bisector: find and repair memory leaks where PyTorch meets ONNX."""

__version__ = "0.1.0"
