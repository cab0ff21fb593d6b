"""The measurements of ``bench_gpu.py`` (see its docstring): search steps, λ_max, peak memory, bf16 agreement and
the two worker modes (a memory probe, one of k packed searches), each on a ``Search`` over random images."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch

from rdarts.architect import Architect
from rdarts.config import SearchConfig
from rdarts.data import ImageData
from rdarts.eigen_tracking import saved_bn_buffers
from rdarts.gpu_packing import memory_fraction_cap, peak_training_bytes
from rdarts.search import Search
from rdarts.spaces import get_space

PRECISIONS = {  # name: (matmul TF32, cuDNN TF32, amp, channels_last)
    "fp32": (False, False, False, False), "default": (False, True, False, False), "tf32": (True, True, False, False),
    "bf16": (False, True, True, False), "channels_last": (False, True, False, True),
    "bf16+channels_last": (False, True, True, True)}


@dataclass(frozen=True)
class Size:
    space: str
    layers: int
    channels: int
    batch_size: int
    image_size: int

    def label(self) -> str:
        return f"{self.space} {self.layers}x{self.channels} b{self.batch_size} {self.image_size}px"


def steps_for(budget_s: float, step_s: float, lo: int = 3, hi: int = 200) -> int:
    """How many timed steps fit ``budget_s`` at ``step_s`` each, within [lo, hi]."""
    if not step_s > 0 or not math.isfinite(step_s):
        return lo
    return max(lo, min(hi, int(budget_s / step_s)))


def agreement(a: list[float], b: list[float]) -> tuple[float, float]:
    """(‖a − b‖ / ‖b‖, cosine(a, b)) of two flat vectors, ``b`` the reference."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    return diff / nb, dot / (na * nb)


def log(msg: str) -> None:
    print(f"[bench_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_precision(name: str) -> tuple[bool, bool]:
    """Set the TF32 flags of precision ``name``; returns its (amp, channels_last)."""
    matmul, cudnn, amp, cl = PRECISIONS[name]
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn
    return amp, cl


def make_search(size: Size, device: str, steps: int, *, amp: bool = False, channels_last: bool = False,
                seed: int = 0, max_iter: int = 100) -> Search:
    """A second-order search on random CIFAR-shaped images with ``steps`` steps per epoch."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * size.batch_size * steps
    x = torch.randint(0, 256, (n, 3, size.image_size, size.image_size), generator=g, dtype=torch.uint8)
    data = ImageData(x, torch.randint(0, 10, (n,), generator=g), 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    cfg = SearchConfig(space=size.space, dataset="cifar10", layers=size.layers, channels=size.channels,
                       batch_size=size.batch_size, n_train=n, order="second", device=device, amp=amp,
                       channels_last=channels_last, seed=seed, hessian_max_iter=max_iter)
    return Search(cfg, None, train_data=data)


def timed_epoch(search: Search, epoch: int) -> float:
    """Seconds per step of one epoch of ``search``."""
    sync(search.device)
    t0 = time.perf_counter()
    search.train_epoch(epoch)
    sync(search.device)
    return (time.perf_counter() - t0) / (len(search.y_train) // search.cfg.batch_size)


def step_time(size: Size, device: str, precision: str, budget_s: float) -> tuple[float, int]:
    """(s per step, steps timed) at ``precision``: a 2-step warm-up epoch sizes the timed epoch."""
    amp, cl = set_precision(precision)
    warm = make_search(size, device, 2, amp=amp, channels_last=cl)
    timed_epoch(warm, 0)
    est = timed_epoch(warm, 1)
    n = steps_for(budget_s - 4 * est, est, hi=100)
    search = make_search(size, device, n, amp=amp, channels_last=cl)
    timed_epoch(search, 0) if n <= 5 else None  # tiny runs: warm this instance too
    return timed_epoch(search, 1 if n <= 5 else 0), n


def eigen_times(size: Size, device: str) -> list[dict[str, object]]:
    set_precision("default")
    search = make_search(size, device, 3)
    search.train_epoch(0)
    rows: list[dict[str, object]] = []
    for kind in ("cold", "warm"):
        sync(search.device)
        t0 = time.perf_counter()
        m = search.measure_eigenvalue(0)
        sync(search.device)
        t = time.perf_counter() - t0
        rows.append({"kind": kind, "seconds": t, "hvps": m.iterations, "ms_per_hvp": 1000 * t / max(1, m.iterations),
                     "lambda_max": m.value})
    return rows


def _rss_status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return float(line.split()[1]) * 1024
    return math.nan


def memory_worker(size: Size, device: str) -> dict[str, float]:
    """Peak memory of two steps and one λ_max at ``size`` (run in a fresh process)."""
    search = make_search(size, device, 2, max_iter=5)
    dev = search.device
    base = _rss_status("VmRSS")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    search.train_epoch(0)
    step = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else math.nan
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    search.measure_eigenvalue(0)
    eig = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else math.nan
    return {"step_bytes": float(step), "eigen_bytes": float(eig), "rss_peak_delta_bytes": _rss_status("VmHWM") - base}


def estimate(size: Size) -> float:
    space = get_space(size.space)
    return peak_training_bytes(space.normal, space.reduce, layers=size.layers, channels=size.channels,
                               batch_size=size.batch_size, image_size=size.image_size, order="second")


def bf16_agreement(size: Size, device: str) -> dict[str, object]:
    """Second-order α gradient with bf16 autocast vs fp32, same weights, batches and BN state."""
    set_precision("fp32")
    search = make_search(size, device, 2)
    search.train_epoch(0)
    dev, aug, gen = search.device, search._augment(), torch.Generator().manual_seed(1)
    idx = torch.arange(size.batch_size, device=dev)
    train = (search._to_input(aug(search.x_train[idx], gen)), search.y_train[idx])
    valid = (search._to_input(aug(search.x_val[idx], gen)), search.y_val[idx])
    how = "CUDA bf16 autocast (amp)" if dev.type == "cuda" else "CPU bf16 autocast (amp is CUDA-only)"
    grads = {}
    for name, ac in (("fp32", None), ("bf16", torch.autocast(dev.type, dtype=torch.bfloat16))):
        arch = Architect(search.model, search.w_optimizer, order="second", autocast=ac)
        with saved_bn_buffers(search.model):
            g = arch.unrolled_gradient(train, valid, search.cfg.lr, search.cfg.weight_decay)
        grads[name] = torch.cat([t.float().reshape(-1) for t in g]).cpu().tolist()
    rel, cos = agreement(grads["bf16"], grads["fp32"])
    return {"rel_error": rel, "cosine": cos, "how": how}


def pack_worker(size: Size, device: str, steps: int, fraction: float) -> dict[str, float]:
    """One packed search: warm up, say READY, wait for GO on stdin, time ``steps`` steps."""
    if device == "cuda" and fraction < 1:
        torch.cuda.set_per_process_memory_fraction(memory_fraction_cap(fraction))
    set_precision("default")
    search = make_search(size, device, steps)
    warm = make_search(size, device, 2)
    timed_epoch(warm, 0)
    print("READY", flush=True)
    sys.stdin.readline()
    t = timed_epoch(search, 0)
    return {"steps": float(steps), "seconds": t * steps}
