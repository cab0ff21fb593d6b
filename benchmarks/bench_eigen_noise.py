"""How much λ_max scatters from one validation batch to the next, and how many batches bring it under 5 %.

Not a test: prints a table. Per space, a supernet is searched for ``--warmup-steps`` first-order steps on real
Fashion-MNIST (so that λ_max is measured on a model that has trained, not at initialisation), then λ_max is measured
the search's way (``rdarts.eigen_tracking.dominant_alpha_eigenvalue``: train mode, arch weight decay included, BN
statistics restored) on ``--batches`` independent validation batches, each solve warm-started from the one before,
as ``hessian_batches`` does. The first batch starts cold; its Hessian-vector products (HVPs) beside the warm ones'
show what the warm start saves across batches.

    python benchmarks/bench_eigen_noise.py                       # reference size: 8 cells x 16 ch, batch 64, 32 px
    python benchmarks/bench_eigen_noise.py --layers 3 --channels 8 --image-size 16 --batches 6   # a quick look

Columns: the batches' mean λ_max, their relative standard deviation (one batch's spread), the standard error of a
k-batch mean as a share of the mean for k = 1, 2, 4, 8 (sd / √k / mean), the smallest k with a relative standard
error under ``--target`` (``ceil((sd / mean / target)²)``), HVPs of the cold first solve and the median of the warm
ones, and the cost of one k-batch measurement in search steps (second order, the reference's step), from the
measured time of an HVP and of a step. The share of search time at the reference's schedule (one λ every 2 epochs
of 391 steps) follows as cost / 782.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from rdarts.architect import Architect
from rdarts.data import Augment, ImageData, load_dataset
from rdarts.eigen_tracking import dominant_alpha_eigenvalue
from rdarts.spaces import get_space
from rdarts.supernet import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]


def _batch(data, n: int, gen: torch.Generator) -> Batch:
    idx = torch.randperm(len(data.labels), generator=gen)[:n]
    return Augment(data)(data.images[idx], gen), data.labels[idx]


def bench_space(name: str, args: argparse.Namespace, train, valid) -> dict[str, float]:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = Supernet(get_space(name), args.channels, train.num_classes, args.layers, train.in_channels).train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)

    def w_step(tr: Batch) -> None:
        w_opt.zero_grad()
        F.cross_entropy(model(tr[0]), tr[1]).backward()
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
        w_opt.step()

    first = Architect(model, w_opt, order="first")
    for _ in range(args.warmup_steps):
        tr, va = _batch(train, args.batch_size, gen), _batch(valid, args.batch_size, gen)
        first.step(tr, va, 0.025, 3e-4)
        w_step(tr)
    # The reference's step (second order) at this size, for the cost column; on a copy of the state, then put back.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = w_opt.state_dict()
    second = Architect(model, w_opt, order="second")
    tr, va = _batch(train, args.batch_size, gen), _batch(valid, args.batch_size, gen)
    t0 = time.perf_counter()
    second.step(tr, va, 0.025, 3e-4)
    w_step(tr)
    t_step = time.perf_counter() - t0
    model.load_state_dict(state)
    w_opt.load_state_dict(opt_state)

    alphas = model.arch_parameters()
    values, iters, seconds = [], [], []
    start = None
    for b in range(args.batches):
        batch = _batch(valid, args.batch_size, gen)
        t0 = time.perf_counter()
        m = dominant_alpha_eigenvalue(model, alphas, [batch], arch_weight_decay=1e-3, tol=args.tol,
                                      max_iter=100, generator=gen, epoch=0, start=start)
        seconds.append(time.perf_counter() - t0)
        values.append(m.value)
        iters.append(m.iterations)
        start = m.vector
        print(f"#   {name} batch {b}: λ_max {m.value:.5f}, {m.iterations} HVPs, {seconds[-1]:.1f} s", flush=True)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    rel = sd / abs(mean)
    t_hvp = sum(seconds) / sum(iters)
    warm = statistics.median(iters[1:])
    k_needed = max(1, math.ceil((rel / args.target) ** 2))
    row = {"n_alpha": sum(a.numel() for a in alphas), "mean": mean, "rel_sd": rel, "k_needed": k_needed,
           "cold_hvps": iters[0], "warm_hvps": warm, "hvp_s": t_hvp, "step_s": t_step,
           # k batches: the first warm from the previous measurement's vector (about the warm count), the rest warm
           "cost_steps_k": k_needed * warm * t_hvp / t_step, "cost_steps_1": warm * t_hvp / t_step}
    for k in (1, 2, 4, 8):
        row[f"rse_{k}"] = rel / math.sqrt(k)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["s1", "s2", "s3"])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=8, help="validation batches measured per space")
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--target", type=float, default=0.05, help="relative standard error wanted")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist").subset(8192).resized(args.image_size)
    half = len(data.labels) // 2  # the search's split: weights on one half, α and λ_max on the other
    train = ImageData(data.images[:half], data.labels[:half], data.num_classes, data.mean, data.std)
    valid = ImageData(data.images[half:], data.labels[half:], data.num_classes, data.mean, data.std)
    print(f"# {args.layers} cells x {args.channels} channels, batch {args.batch_size}, {args.image_size} px "
          f"Fashion-MNIST, {args.warmup_steps} first-order warm-up steps, {args.batches} validation batches, "
          f"tol {args.tol:g}, {args.threads} threads, torch {torch.__version__}", flush=True)
    cols = ["n_alpha", "mean", "rel_sd", "rse_2", "rse_4", "rse_8", "k_needed", "cold_hvps", "warm_hvps",
            "cost_steps_1", "cost_steps_k"]
    rows = [(name, bench_space(name, args, train, valid)) for name in args.spaces]
    print("| space | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows:
        cells = [f"{r[c]:.0f}" if c in ("n_alpha", "k_needed", "cold_hvps") else
                 f"{r[c]:.1f}" if c.startswith("cost") or c == "warm_hvps" else
                 f"{100 * r[c]:.1f}%" if c.startswith(("rel", "rse")) else f"{r[c]:.4f}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
