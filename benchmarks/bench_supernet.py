"""The supernet's fast forward (``rdarts.fast_forward``) against the plain structure, side by side.

Not a test: prints a table of median step times. The two models share their weights; the repetitions alternate
fast and plain, so that load from other processes on a shared machine falls on both alike: compare the ratios.
Wall-clock and process CPU time are both given: on a loaded machine the CPU time (all threads of this process) is
the steadier of the two, and at one thread it is the step's cost.

    python benchmarks/bench_supernet.py                              # darts, s2, s3; 5 cells x 8 ch, 16 px, batch 32
    python benchmarks/bench_supernet.py --spaces s1 s4 --threads 2 --profile

One step is what a first-order search step runs through the supernet: forward + backward for the α gradient on one
batch, then forward + backward for the weight gradient on another (model in train mode). ``--profile`` prints the
torch.profiler table of one plain step (the top ops by self time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rdarts.spaces import get_space
from rdarts.supernet import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]


def first_order_step(model: Supernet, valid: Batch, train: Batch) -> None:
    alphas, weights = model.arch_parameters(), model.weight_parameters()
    torch.autograd.grad(F.cross_entropy(model(valid[0]), valid[1]), alphas)
    torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights)


def models(space: str, args: argparse.Namespace) -> tuple[Supernet, Supernet]:
    torch.manual_seed(args.seed)
    plain = Supernet(get_space(space), args.channels, 10, args.layers, in_channels=1, fast=False).train()
    fast = Supernet(get_space(space), args.channels, 10, args.layers, in_channels=1, fast=True).train()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def bench(space: str, threads: int, args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(threads)
    plain, fast = models(space, args)
    gen = torch.Generator().manual_seed(args.seed)

    def batch() -> Batch:
        return (torch.randn(args.batch_size, 1, args.image_size, args.image_size, generator=gen),
                torch.randint(0, 10, (args.batch_size,), generator=gen))

    valid, train = batch(), batch()
    wall: dict[str, list[float]] = {"plain": [], "fast": []}
    cpu: dict[str, list[float]] = {"plain": [], "fast": []}
    for model in (plain, fast):  # warm-up (allocator, oneDNN primitive caches)
        first_order_step(model, valid, train)
    for _ in range(args.repeats):
        for name, model in (("plain", plain), ("fast", fast)):
            t0, c0 = time.perf_counter(), time.process_time()
            first_order_step(model, valid, train)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    p, f = statistics.median(wall["plain"]), statistics.median(wall["fast"])
    cp, cf = statistics.median(cpu["plain"]), statistics.median(cpu["fast"])
    return {"plain_ms": 1000 * p, "fast_ms": 1000 * f, "speedup": p / f, "plain_cpu_ms": 1000 * cp,
            "fast_cpu_ms": 1000 * cf, "cpu_speedup": cp / cf}


def profile(space: str, args: argparse.Namespace, fast: bool) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(args.threads[0])
    model = models(space, args)[1 if fast else 0]
    b = (torch.randn(args.batch_size, 1, args.image_size, args.image_size), torch.randint(0, 10, (args.batch_size,)))
    first_order_step(model, b, b)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        first_order_step(model, b, b)
    print(f"# {space} {'fast' if fast else 'plain'}, {args.threads[0]} thread(s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["darts", "s2", "s3"])
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table per space (plain and fast)")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.profile:
        for space in args.spaces:
            profile(space, args, fast=False)
            profile(space, args, fast=True)
    print(f"# first-order step: {args.layers} cells x {args.channels} ch, {args.image_size} px, batch "
          f"{args.batch_size}, median of {args.repeats} interleaved repetitions, torch {torch.__version__}")
    print("| space | threads | plain ms | fast ms | plain / fast | plain CPU ms | fast CPU ms | plain / fast (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for space in args.spaces:
        for threads in args.threads:
            r = bench(space, threads, args)
            print(f"| {space} | {threads} | {r['plain_ms']:.0f} | {r['fast_ms']:.0f} | {r['speedup']:.2f}x "
                  f"| {r['plain_cpu_ms']:.0f} | {r['fast_cpu_ms']:.0f} | {r['cpu_speedup']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
