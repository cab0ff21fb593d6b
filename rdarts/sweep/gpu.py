"""``resources.gpu`` of a sweep as Ray gets it: the number given, or for ``auto`` the share the memory model picks.

``auto`` is decided on the driver before any trial starts, from the largest trial of the sweep (each trial's space,
cells, channels, batch, image side, order, amp and method, ``rdarts.gpu_packing``) and the memory of one GPU, taken
from ``resources.gpu_memory_gb`` (default 80 GB): the driver may have no GPU, and Ray does not report GPU memory, so
the sweep file says it. Every trial gets the same share. Pure Python: ``rdarts sweep validate`` stays torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rdarts import gpu_packing
from rdarts.config import NATIVE_IMAGE_SIZES, SearchConfig
from rdarts.errors import UserError
from rdarts.spaces import Genotype
from rdarts.sweep.spec import SweepSpec

AUTO = "auto"


@dataclass(frozen=True)
class GpuPlan:
    fraction: float
    """What each trial asks Ray for."""
    per_gpu: int
    """Searches that fit one GPU (0: not even one)."""
    peak_bytes: float
    """Estimated peak memory of the largest trial."""
    gpu_bytes: float
    largest: str
    """The largest trial, in words."""

    def describe(self) -> str:
        """One line for the sweep's start output: what was chosen and why."""
        return (f"resources.gpu: auto -> {self.fraction:g} GPU per trial ({self.per_gpu} per GPU): the largest trial "
                f"({self.largest}) needs about {self.peak_bytes / gpu_packing.GB:.1f} GB at its peak "
                f"(rdarts.gpu_packing estimate), a GPU has {self.gpu_bytes / gpu_packing.GB:g} GB "
                f"(resources.gpu_memory_gb), {gpu_packing.HEADROOM:.0%} kept free")


def _side(settings: Mapping[str, Any]) -> int:
    return int(settings.get("image_size") or NATIVE_IMAGE_SIZES.get(str(settings["dataset"]).lower(), 32))


def search_peak(search: Mapping[str, Any]) -> tuple[float, str]:
    """Estimated peak bytes of one search (``SearchConfig.to_dict()``), and its size in words."""
    space = SearchConfig.from_dict(dict(search)).search_space()
    side = _side(search)
    peak = gpu_packing.peak_training_bytes(
        space.normal, space.reduce, layers=search["layers"], channels=search["channels"],
        batch_size=search["batch_size"], image_size=side, order=search["order"],
        dtype="bf16" if search.get("amp") else "fp32", method=search.get("method", "darts"))
    words = (f"{search['space']}, {search['layers']} cells x {search['channels']} channels, batch "
             f"{search['batch_size']}, {side} px, {search['order']} order")
    return peak, words


def plan(peaks: Iterable[tuple[float, str]], gpu_memory_gb: float) -> GpuPlan:
    """The share for trials of these (peak bytes, words): fitted to the largest."""
    peak, words = max(peaks, key=lambda p: p[0])
    total = gpu_memory_gb * gpu_packing.GB
    return GpuPlan(gpu_packing.gpu_fraction(peak, total), gpu_packing.searches_per_gpu(peak, total), peak, total,
                   words)


def search_plan(spec: SweepSpec) -> GpuPlan:
    """The ``auto`` plan of a sweep's search trials."""
    return plan((search_peak(t["search"]) for t in spec.trials()), spec.resources.gpu_memory_gb)


def retrain_plan(spec: SweepSpec, jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> GpuPlan:
    """The ``auto`` plan of retrain jobs, ``(genotype JSON, RetrainConfig.to_dict())``: the discrete network as a
    one-op-per-edge supernet, first order, no λ_max (a rough bound: it counts the mixture's share per op too)."""
    def peak(genotype: str, cfg: Mapping[str, Any]) -> tuple[float, str]:
        g = Genotype.from_json(genotype)
        side = _side(cfg)
        layers, channels = cfg["layers"], cfg["channels"]
        normal, reduce = [[op] for op, _ in g.normal], [[op] for op, _ in g.reduce]
        bytes_ = gpu_packing.peak_training_bytes(normal, reduce, layers=layers, channels=channels,
                                                 batch_size=cfg["batch_size"], image_size=side, order="first",
                                                 dtype="bf16" if cfg.get("amp") else "fp32", eigenvalues=False)
        return bytes_, f"retrain, {layers} cells x {channels} channels, batch {cfg['batch_size']}, {side} px"

    return plan((peak(g, c) for g, c in jobs), spec.resources.gpu_memory_gb)


def check(p: GpuPlan) -> None:
    """Refuse an ``auto`` plan whose largest trial does not fit even a GPU of its own."""
    if p.per_gpu < 1:
        raise UserError(f"resources.gpu: auto: the largest trial ({p.largest}) needs about "
                        f"{p.peak_bytes / gpu_packing.GB:.1f} GB at its peak, more than "
                        f"{1 - gpu_packing.HEADROOM:.0%} of a {p.gpu_bytes / gpu_packing.GB:g} GB GPU "
                        "(resources.gpu_memory_gb); lower search.batch_size or search.channels, or set "
                        "resources.gpu: 1 to try anyway (the estimate errs on the large side)")


def search_gpu(spec: SweepSpec) -> float:
    """``resources.gpu`` of the search trials as Ray gets it."""
    gpu = spec.resources.gpu
    return search_plan(spec).fraction if gpu == AUTO else float(gpu)


def retrain_gpu(spec: SweepSpec, jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> float:
    """``resources.gpu`` of the retrain trials as Ray gets it."""
    gpu = spec.resources.gpu
    return retrain_plan(spec, jobs).fraction if gpu == AUTO else float(gpu)
