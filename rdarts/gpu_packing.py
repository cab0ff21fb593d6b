"""How many searches share one GPU: a supernet's peak training memory from its size, and the GPU fraction it earns.

Pure Python, no torch: the sweep driver decides ``resources.gpu: auto`` before anything runs, on a machine that may
have no GPU at all.

The memory model counts activations. One forward pass of the supernet keeps, for its backward pass, about

    saved_bytes = 4 * batch * channels * image_size² * layers * cell_cost(space)

where ``cell_cost`` is ``CELL_BASE`` (preprocessing, node sums, stem, classifier, per cell) plus, per edge, the sum
of ``OP_SAVED`` over the edge's ops (averaged over the normal and the reduction cells, weighted by their counts).
The constants are saved-tensor element counts per (sample x channel x pixel x cell), counted with
``torch.autograd.graph.saved_tensors_hooks`` on single-op supernets (8 cells x 8 channels, 32 px, batch 8; the
per-cell figure moved by under 5 % between 5 and 8 cells) and checked against the five spaces (within 7 %).
The search's peak is a multiple of that: the weight step and the α step hold one graph (``STEP_FACTOR``), a λ_max
measurement holds the forward graph plus the create-graph backward (``EIGEN_FACTOR``, in fp32 whatever ``amp``
says). These factors are the peak resident memory of a CPU search over ``saved_bytes`` (S1 and the DARTS space,
5-8 cells, 8-16 channels, 16 px: 1.9-2.4 for a step, 2.6-3.2 with λ_max). ``benchmarks/bench_gpu.py`` prints the
CUDA figure (``torch.cuda.max_memory_allocated``) beside this estimate for several sizes: refit ``EIGEN_FACTOR`` and
``STEP_FACTOR`` by the median ratio it reports.

At the reference size (S1, 8 cells x 16 channels, batch 64, 32 px) this gives about 6 GB, the DARTS space about 25 GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CELL_BASE = 16.7
"""Saved elements per (sample x channel x pixel) of one cell that do not belong to an edge's ops."""
OP_SAVED: dict[str, float] = {
    "none": 0.5, "noise": 0.5, "skip_connect": 0.97, "avg_pool_3x3": 1.26, "max_pool_3x3": 1.64,
    "dil_conv_3x3": 2.32, "dil_conv_5x5": 2.32, "conv_7x1_1x7": 2.42,
    "sep_conv_3x3": 4.51, "sep_conv_5x5": 4.52, "sep_conv_7x7": 4.53,
}
"""Per edge and op, its share of the mixture (0.5) included."""
STEP_FACTOR = {"first": 1.9, "second": 2.1}
EIGEN_FACTOR = 2.9
DTYPE_BYTES = {"fp32": 4, "bf16": 2}
PARTIAL_CHANNELS = {"pc-darts": 0.25}
"""Methods whose ops see only part of the channels (PC-DARTS: K = 4)."""
HEADROOM = 0.10
"""Share of a GPU kept free of searches: CUDA contexts (~0.5 GB each), the caching allocator's fragmentation."""
MAX_PER_GPU = 8
RAY_RESOLUTION = 1e-4
"""Ray keeps resource amounts to 4 decimals: a fraction is rounded down to that, so k of them still fit one GPU."""
GB = 1e9


def cell_cost(normal: Sequence[Sequence[str]], reduce: Sequence[Sequence[str]], layers: int,
              op_share: float = 1.0) -> float:
    """``CELL_BASE`` plus the edges' op costs, the two cell types weighted by how many of each the supernet has."""
    n_reduce = len({layers // 3, 2 * layers // 3})
    n_normal = max(0, layers - n_reduce)

    def edges(cell: Sequence[Sequence[str]]) -> float:
        return sum(OP_SAVED.get(op, max(OP_SAVED.values())) for ops in cell for op in ops)

    ops = (n_normal * edges(normal) + n_reduce * edges(reduce)) / (n_normal + n_reduce)
    return CELL_BASE + op_share * ops


def saved_bytes(normal: Sequence[Sequence[str]], reduce: Sequence[Sequence[str]], *, layers: int, channels: int,
                batch_size: int, image_size: int, method: str = "darts") -> float:
    """Bytes one fp32 forward pass of the supernet keeps for its backward pass (see the module docstring)."""
    share = PARTIAL_CHANNELS.get(method, 1.0)
    return 4.0 * batch_size * channels * image_size ** 2 * layers * cell_cost(normal, reduce, layers, share)


def peak_training_bytes(normal: Sequence[Sequence[str]], reduce: Sequence[Sequence[str]], *, layers: int,
                        channels: int, batch_size: int, image_size: int, order: str = "second",
                        dtype: str = "fp32", method: str = "darts", eigenvalues: bool = True) -> float:
    """Peak memory of a search step (and of its λ_max measurements, when ``eigenvalues``) at this size.

    Args:
        normal, reduce: The op lists per edge of the two cell types (``SearchSpace.normal``, ``.reduce``).
        order: ``first`` or ``second`` (the unrolled step holds a little more).
        dtype: ``fp32`` or ``bf16`` (autocast): scales the step's activations, not λ_max's (always fp32).
        eigenvalues: Whether λ_max is measured (every rdarts search does, every ``ev_every`` epochs).
    """
    if order not in STEP_FACTOR:
        raise ValueError(f"order must be one of {sorted(STEP_FACTOR)}, got {order!r}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    saved = saved_bytes(normal, reduce, layers=layers, channels=channels, batch_size=batch_size,
                        image_size=image_size, method=method)
    step = saved * STEP_FACTOR[order] * DTYPE_BYTES[dtype] / 4
    return max(step, saved * EIGEN_FACTOR) if eigenvalues else step


def searches_per_gpu(peak_bytes: float, gpu_total_bytes: float, *, headroom: float = HEADROOM,
                     max_per_gpu: int = MAX_PER_GPU) -> int:
    """The most searches of ``peak_bytes`` that fit in ``(1 - headroom)`` of the GPU, at most ``max_per_gpu``;
    0 when not even one fits."""
    if peak_bytes <= 0 or gpu_total_bytes <= 0:
        raise ValueError(f"memory figures must be positive, got peak {peak_bytes}, GPU {gpu_total_bytes}")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    return min(max_per_gpu, math.floor(gpu_total_bytes * (1 - headroom) / peak_bytes))


def gpu_fraction(peak_bytes: float, gpu_total_bytes: float, *, headroom: float = HEADROOM,
                 max_per_gpu: int = MAX_PER_GPU) -> float:
    """The GPU share of one search: 1/k for the largest k that fits (``searches_per_gpu``), rounded down to Ray's
    resolution so that k of them fit one GPU; 1.0 (a GPU of its own) when even one search does not fit."""
    k = searches_per_gpu(peak_bytes, gpu_total_bytes, headroom=headroom, max_per_gpu=max_per_gpu)
    if k <= 1:
        return 1.0
    return math.floor(1 / k / RAY_RESOLUTION) * RAY_RESOLUTION


def memory_fraction_cap(fraction: float, headroom: float = HEADROOM) -> float:
    """The share of the GPU's memory a trial with GPU share ``fraction`` may allocate
    (``torch.cuda.set_per_process_memory_fraction``): its share of what the headroom leaves, so that the trials
    packed on one GPU together never take the headroom, and none can starve the others."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a GPU fraction must be in (0, 1], got {fraction}")
    return fraction * (1 - headroom)
