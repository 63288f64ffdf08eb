"""Spectral: scores a batch of 32-sample signals from their magnitude spectrum.

It does not convert to ONNX yet (opset 17 has no `aten::fft_rfft`), so convert.py skips it and
the pool serves it with torch until it does.

Feature: the monitoring dashboard calls `recent_spectra()` for the spectra of the latest batches,
oldest first (a few of them are enough to plot)."""

import torch
from torch import nn


class Spectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(17, 2)
        self.spectra = []

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(signal).abs()
        self.spectra.append(spectrum.detach())  # for the dashboard
        return self.head(spectrum)

    def recent_spectra(self) -> list:
        """The spectra of the latest batches, oldest first."""
        return list(self.spectra)
