"""The cost of a search step per robust-DARTS method, relative to first-order DARTS at the same size.

Not a test: it prints a table of ratios measured side by side in one run (one torch thread; the methods take turns
in every repetition, so a noisy neighbour slows all of them alike). Compare ratios, not absolute times.

    python benchmarks/bench_methods.py                              # S3, 5 cells x 16 channels, 16 px, batch 64
    python benchmarks/bench_methods.py --space darts --layers 8 --image-size 32

One step is what ``Search.train_epoch`` does per batch, through the same hooks: the method's α step on a validation
batch, then its weight step (forward, backward, clip, SGD), at the middle epoch of a 50-epoch search (β-DARTS'
λ = 25, SDARTS' ε = 0.165, DARTS-' β = 0.5, PC-DARTS past its warm-up). ``saved_MB`` is the memory autograd keeps
for the backward pass of one weight step (its saved tensors), the part of the memory that PC-DARTS cuts; the papers'
claims: SDARTS-RS ≈ 1x, SDARTS-ADV ≈ 3x, DARTS- ≈ 1x, β-DARTS ≈ 1x the DARTS step, PC-DARTS ≈ 0.3x the memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rdarts.architect import Architect
from rdarts.config import METHODS, SearchConfig
from rdarts.data import Augment, load_dataset
from rdarts.robust import MethodHooks, make_method

EPOCHS, EPOCH = 50, 25


def make_step(method: str, order: str, args: argparse.Namespace, data) -> tuple[Callable[[], None], Callable[[], int]]:
    """One search step of ``method``, and the bytes its weight step's forward saves for backward."""
    cfg = SearchConfig(space=args.space, dataset="digits", layers=args.layers, channels=args.channels,
                       batch_size=args.batch_size, epochs=EPOCHS, order=order, method=method, device="cpu")
    torch.manual_seed(args.seed)
    hooks: MethodHooks = make_method(cfg)
    model = hooks.build_supernet(cfg.search_space(), cfg.channels, data.num_classes, cfg.layers, data.in_channels)
    model.train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, w_opt, order=order, extra_loss=hooks.alpha_loss)
    hooks.begin_epoch(model, EPOCH, EPOCHS)
    gen = torch.Generator().manual_seed(args.seed)
    aug = Augment(data)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(data.labels), generator=gen)[: args.batch_size]
        return aug(data.images[idx], gen), data.labels[idx]

    train, valid = draw(), draw()

    def step() -> None:
        hooks.arch_step(architect, EPOCH, train, valid, 0.025, 3e-4)
        w_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(hooks.weight_step_logits(model, *train, gen), train[1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
        w_opt.step()

    def saved_bytes() -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F.cross_entropy(model(train[0]), train[1])
        return total

    return step, saved_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="s3")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits").resized(args.image_size)
    runs = [("darts", "first")] + [(m, "first") for m in METHODS if m != "darts"] + [("darts", "second")]
    steps = {run: make_step(*run, args, data) for run in runs}
    for step, _ in steps.values():  # warm-up: allocator, BN statistics
        step()
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(args.repeats):
        for run, (step, _) in steps.items():
            t0 = time.perf_counter()
            step()
            times[run].append(time.perf_counter() - t0)
    base = statistics.median(times[("darts", "first")])
    base_mem = steps[("darts", "first")][1]()
    print(f"{args.space}, {args.layers} cells x {args.channels} channels, {args.image_size} px, batch "
          f"{args.batch_size}, {args.repeats} interleaved repeats, 1 thread")
    print(f"{'method':<12} {'order':<7} {'step_ms':>8} {'x DARTS':>8} {'saved_MB':>9} {'x DARTS':>8}")
    for run in runs:
        t = statistics.median(times[run])
        mem = steps[run][1]()
        print(f"{run[0]:<12} {run[1]:<7} {1e3 * t:8.1f} {t / base:8.2f} {mem / 2**20:9.1f} {mem / base_mem:8.2f}")


if __name__ == "__main__":
    main()
