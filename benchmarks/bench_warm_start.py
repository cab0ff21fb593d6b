"""What a warm start can save on λ_max inside a real search: the dense α Hessian at every epoch as the oracle.

Not a test: prints a table. Per space, a short search runs on real Fashion-MNIST with λ every epoch and warm starts
on (the default), keeping its checkpoints: each holds the weights, α and the Ritz vector of that epoch's measurement.
Then, at every epoch's checkpoint, the dense Hessian of the validation loss w.r.t. α (the reference's method,
``rdarts.hessian.dense_hessian``) on one fixed validation batch (the search's transform, one fixed draw) gives the
exact top eigenpair, and Lanczos (``rdarts.hessian.lanczos``) runs on that matrix from three starts:

- ``ideal``: the previous epoch's exact top eigenvector on the same batch. No warm start can do better than the last
  answer on the same data, so its count is the floor for any warm start from one vector;
- ``search``: the previous epoch's stored Ritz vector, what the search actually warm-starts from (the reference's
  rule measures on the epoch's last validation batch, a different batch each time);
- ``cold``: a random vector.

For each start, two counts: ``need``, the Hessian-vector products (HVPs) after which the top Ritz value is truly
within ``--tol`` of the exact λ_max (known only to the oracle), and ``rule``, the HVPs after which Lanczos' own
stopping rule stops. ``cos`` is |cosine| between the start and the new exact top eigenvector; ``gap`` the top gap
relative to the spread, (λ1 − λ2) / (λ1 − λn).

    python benchmarks/bench_warm_start.py                    # S1 and S3, 10 epochs, about 6 minutes on 2 cores
    python benchmarks/bench_warm_start.py --per-epoch        # one line per epoch as well
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence

import torch

from rdarts.checkpoint import CheckpointStore
from rdarts.config import SearchConfig
from rdarts.eigen_tracking import measured_loss, saved_bn_buffers
from rdarts.hessian import dense_hessian, lanczos
from rdarts.search import Search

STARTS = ("ideal", "search", "cold")


def hvps_to_reach(H: torch.Tensor, start: torch.Tensor, tol: float, max_iter: int = 60) -> int:
    """HVPs after which Lanczos from ``start`` has its top Ritz value within ``tol`` (relative) of λ_max(H).

    The oracle count: it needs the exact λ_max, which no solver has. Lanczos with a fixed start is deterministic,
    so the run capped at ``m`` products is the first ``m`` iterations of the uncapped one.
    """
    lam = float(torch.linalg.eigvalsh(H)[-1])
    for m in range(1, min(max_iter, H.shape[0]) + 1):
        top = lanczos(lambda v: H @ v, H.shape[0], tol=0.0, max_iter=m, start=start).eigenvalues[0]
        if abs(top - lam) <= tol * abs(lam):
            return m
    return max_iter + 1


def hvps_by_rule(H: torch.Tensor, start: torch.Tensor, tol: float) -> int:
    """HVPs Lanczos' own stopping rule uses from ``start``."""
    return lanczos(lambda v: H @ v, H.shape[0], tol=tol, max_iter=100, start=start).iterations


def epoch_rows(space: str, args: argparse.Namespace) -> list[dict[str, float]]:
    cfg = SearchConfig(space=space, dataset="fashion-mnist", epochs=args.epochs, layers=args.layers,
                       channels=args.channels, n_train=args.n_train, image_size=args.image_size,
                       batch_size=args.batch_size, order="first", ev_every=1, hessian_tol=args.tol,
                       hessian_warm_start=True, seed=args.seed, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        search = Search(cfg, out)
        search.run()
        store = CheckpointStore(f"{out}/checkpoints")
        probe = search._augment()(search.x_val[: args.batch_size], torch.Generator().manual_seed(args.seed))
        labels = search.y_val[: args.batch_size]
        alphas = list(search.model.alpha_parameters())
        gen = torch.Generator().manual_seed(args.seed)
        rows: list[dict[str, float]] = []
        prev_u: torch.Tensor | None = None
        prev_ritz: torch.Tensor | None = None
        for epoch in range(args.epochs):
            state = store.load(epoch)
            search.model.load_state_dict(state["model"])
            search.model.train()  # the search's measurement mode: BN on batch statistics

            with saved_bn_buffers(search.model):
                H = dense_hessian(lambda: measured_loss(search.model, alphas, (probe, labels), cfg.arch_weight_decay),
                                  alphas).double()
            ev, U = torch.linalg.eigh(H)
            u = U[:, -1]
            if prev_u is not None and prev_ritz is not None:
                starts = {"ideal": prev_u, "search": prev_ritz.double(),
                          "cold": torch.randn(H.shape[0], generator=gen, dtype=torch.float64)}
                row: dict[str, float] = {"epoch": epoch, "lambda": float(ev[-1]),
                                         "gap": float((ev[-1] - ev[-2]) / (ev[-1] - ev[0]))}
                for name, start in starts.items():
                    row[f"cos_{name}"] = abs(float(start @ u) / float(start.norm()))
                    row[f"need_{name}"] = hvps_to_reach(H, start, args.tol)
                    row[f"rule_{name}"] = hvps_by_rule(H, start, args.tol)
                rows.append(row)
            prev_u, prev_ritz = u, state["ritz_vector"]
    return rows


def summary_cells(rows: Sequence[dict[str, float]]) -> list[str]:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    cells = [f"{med['gap']:.2f}"]
    for name in STARTS:
        cells += [f"{med[f'cos_{name}']:.2f}", f"{med[f'need_{name}']:g} / {med[f'rule_{name}']:g}"]
    return cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spaces", nargs="+", default=["s1", "s3"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--per-epoch", action="store_true", help="print every epoch's counts too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {args.layers} cells x {args.channels} channels, {args.image_size} px Fashion-MNIST, "
          f"{args.n_train} images, batch {args.batch_size}, first order, {args.epochs} epochs, λ every epoch, "
          f"tol {args.tol:g}, seed {args.seed}; medians over epochs 1..{args.epochs - 1}; HVPs as need / rule",
          flush=True)
    results = []
    for space in args.spaces:
        rows = epoch_rows(space, args)
        if args.per_epoch:
            for r in rows:
                print(f"#   {space} " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()), flush=True)
        results.append((space, rows))
    print("| space | top gap | cos ideal | HVPs ideal | cos search | HVPs search | cos cold | HVPs cold |")
    print("|---|---|---|---|---|---|---|---|")
    for space, rows in results:
        print(f"| {space} | " + " | ".join(summary_cells(rows)) + " |", flush=True)


if __name__ == "__main__":
    main()
