"""Engine benchmarks: search-step cost, Lanczos eigenvalue against the reference's dense Hessian, tracking overhead.

Not a test: it prints a table of times measured side by side in one run (timings on shared machines are noisy, so
compare the ratios, not the absolute numbers).

    python benchmarks/bench_engine.py                    # small supernet, every space
    python benchmarks/bench_engine.py --layers 8 --channels 16 --image-size 32 --batch-size 64 --spaces darts

1. ms per search step, first and second order (α step + weight step, one batch).
2. ``dominant_eigenvalue`` (Lanczos on Hessian-vector products) against the reference's method (one backward pass
   per α entry, then the largest eigenvalue of the dense matrix) on the same validation batch, model in train mode,
   arch weight decay included: times, speed-up, relative difference of the eigenvalues.
3. Eigenvalue tracking as a share of search time at the reference's schedule: one λ every ``ev_every`` = 2 epochs of
   ``steps_per_epoch`` = 391 second-order steps (25k images / batch 64), i.e. t_λ / (2 * 391 * t_step).
   ``frozen_s`` is the same λ with the weights' requires_grad off, kept to show why the search does not do that.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rdarts.architect import Architect
from rdarts.data import Augment, load_dataset
from rdarts.hessian import dense_hessian, top_eigenvalues
from rdarts.spaces import get_space
from rdarts.supernet import Supernet


def _batch(data, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(data.labels), generator=gen)[:n]
    return Augment(data)(data.images[idx], gen), data.labels[idx]


def reference_eigenvalue(loss_fn, alphas) -> float:
    """The reference's method: the dense Hessian row by row, then max of its eigenvalues."""
    H = dense_hessian(loss_fn, alphas)
    return float(torch.linalg.eigvalsh(H.double())[-1])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_space(name: str, args: argparse.Namespace, data, gen: torch.Generator) -> dict[str, float]:
    torch.manual_seed(args.seed)
    space = get_space(name)
    model = Supernet(space, args.channels, data.num_classes, args.layers, data.in_channels)
    model.train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    row: dict[str, float] = {"n_alpha": space.num_alphas}
    train, valid = _batch(data, args.batch_size, gen), _batch(data, args.batch_size, gen)
    # Warm the search up a few steps so that the eigenvalue is measured on a model that has trained a little.
    arch = Architect(model, w_opt, order="first")
    for _ in range(args.warmup_steps):
        tr, va = _batch(data, args.batch_size, gen), _batch(data, args.batch_size, gen)
        arch.step(tr, va, 0.025, 3e-4)
        w_opt.zero_grad()
        F.cross_entropy(model(tr[0]), tr[1]).backward()
        w_opt.step()
    for order in ("first", "second"):
        arch = Architect(model, w_opt, order=order)

        def step(arch: Architect = arch) -> None:
            arch.step(train, valid, 0.025, 3e-4)
            w_opt.zero_grad()
            F.cross_entropy(model(train[0]), train[1]).backward()
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
            w_opt.step()

        step()  # warm-up
        times = [timed(step)[1] for _ in range(args.repeats)]
        row[f"step_{order}_ms"] = 1000 * min(times)

    alphas = model.arch_parameters()
    wd = 1e-3
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def loss_fn() -> torch.Tensor:
        model.load_state_dict(state)  # same BN statistics and (for S4) same noise for both methods
        torch.manual_seed(1234)
        return F.cross_entropy(model(valid[0]), valid[1]) + 0.5 * wd * sum((a * a).sum() for a in alphas)

    lz, t_lz = timed(lambda: top_eigenvalues(loss_fn, alphas, 1, tol=args.tol))
    if args.no_reference:  # the dense Hessian takes ~n_alpha times a Hessian-vector product: skip at large sizes
        ref, t_ref = float("nan"), float("nan")
    else:
        ref, t_ref = timed(lambda: reference_eigenvalue(loss_fn, alphas))
    # For the record: the same measurement with the weights frozen (a smaller graph, but slower double-backward
    # kernels on CPU at the reference's size), which the search therefore does not do.
    for w in model.weight_parameters():
        w.requires_grad_(False)
    _, t_frozen = timed(lambda: top_eigenvalues(loss_fn, alphas, 1, tol=args.tol))
    for w in model.weight_parameters():
        w.requires_grad_(True)
    row.update(lanczos_s=t_lz, frozen_s=t_frozen, lanczos_iters=lz.iterations, reference_s=t_ref, speedup=t_ref / t_lz,
               lambda_lanczos=lz.eigenvalues[0], lambda_reference=ref,
               rel_diff=abs(lz.eigenvalues[0] - ref) / abs(ref),
               tracking_share=t_lz / (args.ev_every * args.steps_per_epoch * row["step_second_ms"] / 1000))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["darts", "s1", "s2", "s3", "s4"])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--ev-every", type=int, default=2)
    p.add_argument("--steps-per-epoch", type=int, default=391)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-reference", action="store_true", help="skip the dense Hessian (large supernets)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset).subset(4096).resized(args.image_size)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"# supernet: {args.layers} cells x {args.channels} channels, {args.image_size}px {args.dataset}, "
          f"batch {args.batch_size}, {args.warmup_steps} warm-up steps, torch {torch.__version__}, "
          f"{args.threads} threads")
    cols = ["n_alpha", "step_first_ms", "step_second_ms", "lanczos_iters", "lanczos_s", "reference_s", "speedup",
            "rel_diff", "frozen_s", "tracking_share"]
    print("| space | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name in args.spaces:
        r = bench_space(name, args, data, gen)
        cells = [f"{r[c]:.0f}" if c in ("n_alpha", "lanczos_iters") else
                 f"{r[c]:.1f}" if c.endswith("_ms") or c == "speedup" else
                 f"{100 * r[c]:.2f}%" if c == "tracking_share" else
                 f"{r[c]:.1e}" if c == "rel_diff" else f"{r[c]:.2f}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
