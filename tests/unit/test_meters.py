"""GPU meters against a fake NVML (this machine has no GPU; the real path is checked on a GPU
machine when one is lent, see the closing notes)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from bisector.probe.meters import Meters, type_growth


class FakeNvml:
    def __init__(
        self, per_process: dict[int, int] | None, device_used: list[int], fail_processes: bool = False
    ) -> None:
        self.per_process = per_process
        self.device_used = device_used
        self.fail_processes = fail_processes
        self.shutdown = False

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.device_used)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int):
        if self.fail_processes:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        if not self.per_process:
            return []
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.per_process.items()]

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        return SimpleNamespace(used=self.device_used[handle], total=80 * 2**30)


def meters_with(nvml: FakeNvml) -> Meters:
    m = Meters(device="cpu")
    m._init_nvml(nvml)
    return m


def test_per_process_gpu_memory_sums_this_pid_across_devices() -> None:
    nvml = FakeNvml({os.getpid(): 300_000_000, 12345: 7_000_000_000}, [1, 2])
    m = meters_with(nvml)
    assert m.gpu_bytes() == 2 * 300_000_000  # the fake lists the process on both devices
    assert m.gpu_source == "nvml-process"
    m.close()
    assert nvml.shutdown


def test_falls_back_to_device_memory_when_processes_are_not_attributed() -> None:
    # In containers NVML often reports host PIDs that never match ours.
    m = meters_with(FakeNvml({99999: 5}, [1_000_000_000, 500_000_000]))
    assert m.gpu_bytes() == 1_500_000_000
    assert m.gpu_source == "nvml-device"
    m2 = meters_with(FakeNvml(None, [42], fail_processes=True))
    assert m2.gpu_bytes() == 42


def test_no_nvml_means_no_gpu_reading() -> None:
    class Broken:
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    m = Meters(device="cpu")
    m._init_nvml(Broken())
    assert m.gpu_bytes() is None


def test_sample_reads_rss_uss_and_objects() -> None:
    values = Meters(device="cpu").sample()
    assert values["rss"] > 10_000_000
    assert values["objects"] > 0
    assert "gpu" not in values


def test_type_growth_lists_what_piled_up() -> None:
    from collections import Counter

    before = Counter({"torch.Tensor": 10, "builtins.dict": 5})
    after = Counter({"torch.Tensor": 26, "builtins.dict": 5, "builtins.list": 1})
    assert type_growth(before, after) == {"torch.Tensor": 16, "builtins.list": 1}


def test_the_probe_keeps_the_users_warning_registry_growing_and_counts_its_entries(monkeypatch) -> None:
    """A warning whose text names the input length adds one __warningregistry__ entry per length; a
    blanket "ignore" filter hid that growth, and the entries' keys are not tracked by the collector."""
    import logging
    import sys
    import types
    import warnings

    from bisector.probe.child import _quiet
    from bisector.probe.meters import WARNING_ENTRY, warning_registry_entries

    user = types.ModuleType("corpus_user_layer")
    toolchain = types.ModuleType("torch._bisector_test_layer")
    code = "import warnings\ndef f(t):\n    warnings.warn(f'length {t} is not a multiple of 8')\n"
    monkeypatch.setenv("TORCH_LOGS", os.environ.get("TORCH_LOGS", "-all"))  # _quiet sets it by default
    for name in ("torch", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    for m in (user, toolchain):
        exec(compile(code, f"<{m.__name__}>", "exec"), m.__dict__)
        sys.modules[m.__name__] = m
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            _quiet()
            before = warning_registry_entries()
            for t in (3, 5, 7, 5):
                user.f(t)
                toolchain.f(t)  # the toolchain's own warnings stay ignored: no registry of the model's
            assert warning_registry_entries() - before == 3
            assert Meters.type_counts()[WARNING_ENTRY] >= 3
    finally:
        del sys.modules[user.__name__], sys.modules[toolchain.__name__]
