"""ONNX Runtime memory options: the settings users are told to try for growing memory.

- the run option ``memory.enable_memory_arena_shrinkage`` ("cpu:0", "gpu:0"): the arena gives
  back what a run did not keep (docs: arenas never shrink otherwise);
- ``enable_cpu_mem_arena=False``: plain malloc/free instead of the arena;
- ``enable_mem_pattern=False``: no per-shape memory-pattern cache (microsoft/onnxruntime#11118);
- ``arena_extend_strategy`` kSameAsRequested instead of kNextPowerOfTwo (#11627);
- ``intra_op_num_threads=1``: the seed article's first step for multithreaded inference;
- one warm-up run at the largest input of every range (#11627): the arena takes its full size
  at start instead of growing with each new largest input (memory is then flat, at the top);
- on CUDA: ``cudnn_conv_algo_search=HEURISTIC`` (#7612, #8287: exhaustive search per new shape),
  the arena strategy, and a ``gpu_mem_limit``.
"""

from __future__ import annotations

from bisector.fixers.base import LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK, Candidate, Example, FixTarget


class OrtOptions:
    name = "ort-options"
    description = (
        "ONNX Runtime memory options: arena shrinkage, arena off, memory pattern off, exact arena growth, one thread"
    )
    stages = ("inference",)
    # A toolchain-leak too: growth the runtime's own code keeps is what these options contain.
    kinds = (LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK)

    def propose(self, target: FixTarget) -> list[Candidate]:
        cuda = target.device == "cuda"
        out = self._memory_options("gpu:0" if cuda else "cpu:0")
        if target.kind == SHAPE_GROWTH and target.dims and not target.fixed_inputs:
            out.append(self._warm_up(cuda))
        if cuda:
            out += self._cuda_options(target)
        return out

    def _memory_options(self, device: str) -> list[Candidate]:
        """The options tried on every device: arena shrinkage, arena off, pattern off, exact growth, one thread."""
        return [
            Candidate(
                self.name,
                f"run option memory.enable_memory_arena_shrinkage={device}: the arena returns what a run did not keep",
                probe={"run_options": {"memory.enable_memory_arena_shrinkage": device}},
            ),
            Candidate(
                self.name,
                "enable_cpu_mem_arena=False: no CPU arena, memory is freed after each run",
                probe={"session_options": {"enable_cpu_mem_arena": False}},
            ),
            Candidate(
                self.name,
                "enable_mem_pattern=False: no memory-pattern cache per input shape",
                probe={"session_options": {"enable_mem_pattern": False}},
            ),
            Candidate(
                self.name,
                "arena_extend_strategy=kSameAsRequested: the arena grows by what is asked, not to the next "
                "power of two",
                probe={"session_options": {"arena_extend_strategy": "kSameAsRequested"}},
            ),
            Candidate(
                self.name,
                "intra_op_num_threads=1: one intra-op thread (and its buffers)",
                probe={"session_options": {"intra_op_num_threads": 1}},
            ),
        ]

    def _warm_up(self, cuda: bool) -> Candidate:
        """One run at the largest input of every range before serving (and exact growth on the CPU)."""
        # On the CPU, with the default power-of-two growth, the warmed-up arena keeps reserved
        # pages that no run has touched yet; later shapes fault them in, so RSS still climbed per
        # new shape (catalog heatmap, H/W 16:96: 34 MB without the warm-up, 5.8 MB with it, 0
        # with it and exact growth). Exact growth alone is worse (100 MB): freed regions of one
        # shape do not fit the next. Together the arena is as large as the largest run, all of it
        # touched. (A CUDA arena's memory counts when it is reserved: the warm-up alone.)
        exact = {} if cuda else {"session_options": {"arena_extend_strategy": "kSameAsRequested"}}
        return Candidate(
            self.name,
            "warm the session up once at the largest input of every range"
            + ("" if cuda else ", with the arena grown by exactly what is asked (kSameAsRequested)")
            + ": it takes its full size at start, not one step per new largest input",
            probe={"warmup": "largest", **exact},
            size=2 + len(exact),
        )

    def _cuda_options(self, target: FixTarget) -> list[Candidate]:
        """cuDNN's heuristic search, exact arena growth, and a cap a little above the measured peak."""
        out = [
            Candidate(
                self.name,
                "cudnn_conv_algo_search=HEURISTIC: no exhaustive cuDNN search (and workspace) per new shape",
                probe={"provider_options": {"cudnn_conv_algo_search": "HEURISTIC"}},
            ),
            Candidate(
                self.name,
                "CUDA arena_extend_strategy=kSameAsRequested",
                probe={"provider_options": {"arena_extend_strategy": "kSameAsRequested"}},
            ),
        ]
        peak = target.figures.get("peak_gpu_bytes")
        if peak:
            # Cap the CUDA arena a little above the largest working set measured: growth past it
            # is refused (reused instead) rather than kept. Too tight a cap makes runs fail,
            # and a failing candidate is dropped, never kept.
            limit = _round_up(int(peak * 1.25), 256 << 20)
            out.append(
                Candidate(
                    self.name,
                    f"gpu_mem_limit={limit >> 20} MiB: the CUDA arena may not grow past 1.25x the measured peak",
                    probe={"provider_options": {"gpu_mem_limit": limit}},
                )
            )
        return out

    examples = (
        Example(
            "a capped CUDA arena",
            FixTarget("inference", SHAPE_GROWTH, device="cuda", figures={"peak_gpu_bytes": 900e6}),
            True,
            "gpu_mem_limit=1280 MiB",
        ),
        Example("arena staircase on the CPU", FixTarget("inference", SHAPE_GROWTH), True, "arena"),
        Example(
            "dynamic sizes: warm up at the largest",
            FixTarget("inference", SHAPE_GROWTH, dims={"B": (1, 16)}),
            True,
            "largest input of every range, with the arena grown by exactly what is asked",
        ),
        Example(
            # The CUDA provider takes no session-level arena strategy (the candidate would fail).
            "dynamic sizes on the GPU: the warm-up alone",
            FixTarget("inference", SHAPE_GROWTH, device="cuda", dims={"B": (1, 16)}),
            True,
            "largest input of every range: it takes its full size",
        ),
        Example("per-run growth", FixTarget("inference", LEAK), True, "enable_cpu_mem_arena"),
        Example("growth the runtime owns", FixTarget("inference", TOOLCHAIN_LEAK), True, "enable_cpu_mem_arena"),
        Example("cuDNN search on the GPU", FixTarget("inference", SHAPE_GROWTH, device="cuda"), True, "HEURISTIC"),
        Example("a leak in eager forward is not the runtime's", FixTarget("eager", LEAK), False),
        Example("an export leak is not the runtime's", FixTarget("export", LEAK), False),
    )


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


FIXER = OrtOptions()
