"""The ``rdarts`` command line: a thin layer over the library.

Bad input (an unknown space, op or dataset, a value out of range, a missing data folder) ends with one line
``rdarts: error: ...`` that names the problem and the fix, and exit code 2; a diverged search exits 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rdarts.errors import UserError

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line too (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"rdarts: error: {message} (see '{self.prog} --help')\n")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="run one RobustDARTS search", description="Run one RobustDARTS search "
                       "(defaults: the reference's settings). Run again with the same --out to resume.")
    a = p.add_argument
    a("--space", default="s1", help="darts, s1, s2, s3, s4 (default: s1)")
    a("--dataset", default="cifar10", help="cifar10, cifar100, svhn, fashion-mnist, digits (default: cifar10)")
    a("--data-root", default=None, help="folder holding the dataset (torchvision layout)")
    a("--download", action="store_true", help="download the dataset into --data-root if missing")
    a("--epochs", type=int, default=50)
    a("--layers", type=int, default=8, help="cells in the supernet (default: 8)")
    a("--channels", type=int, default=16, help="initial channels (default: 16)")
    a("--nodes", type=int, default=4, help="intermediate nodes per cell (default: 4)")
    a("--batch-size", type=int, default=64)
    a("--n-train", type=int, default=None, help="training examples used, split 50/50 for w and α (default: all)")
    a("--image-size", type=int, default=None, help="resize images to this side (default: as stored)")
    a("--order", choices=("first", "second"), default="second")
    a("--lr", type=float, default=0.025)
    a("--weight-decay", type=float, default=3e-4)
    a("--drop-path", type=float, default=0.0, help="scheduled drop path, ramped from 0 (cutout on when > 0)")
    a("--cutout", type=_bool, default=None, help="force cutout on/off (default: on iff --drop-path > 0)")
    a("--augment", type=_bool, default=True, help="random crop and flip on the search's batches (default: true, "
      "as the reference)")
    a("--early-stop", choices=("off", "es", "ada"), default="off")
    a("--ev-every", type=int, default=2, help="epochs between Hessian eigenvalues (default: 2; the last epoch too)")
    a("--hessian-batches", type=int, default=1, help="validation batches per λ_max (default: 1, as the reference)")
    a("--es-preset", choices=("reference", "paper"), default="reference",
      help="DARTS-ES constants: the released code's (default) or the paper's")
    a("--seed", type=int, default=1)
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    a("--amp", type=_bool, default=False, help="bf16 autocast for the training passes on CUDA (default: false; "
      "the reference is fp32)")
    a("--out", type=Path, default=None, help="output folder (default: runs/<space>-<dataset>-seed<seed>)")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)


def _search_config(args: argparse.Namespace) -> Any:
    from rdarts.config import SearchConfig
    from rdarts.stopping import PRESETS

    rule = PRESETS[args.es_preset]
    ev_every = args.ev_every if args.es_preset == "reference" else rule.ev_every
    return SearchConfig(
        space=args.space, dataset=args.dataset, data_root=args.data_root, download=args.download,
        n_train=args.n_train, image_size=args.image_size, layers=args.layers, channels=args.channels,
        nodes=args.nodes, epochs=args.epochs, batch_size=args.batch_size, order=args.order, lr=args.lr,
        weight_decay=args.weight_decay, drop_path=args.drop_path, cutout=args.cutout, augment=args.augment,
        hessian_batches=args.hessian_batches, amp=args.amp, ev_every=ev_every,
        early_stop=args.early_stop, es_window=rule.window, es_delta=rule.delta, es_factor=rule.factor,
        es_start_epoch=rule.start_epoch, seed=args.seed, device=args.device,
    )


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"


def _cmd_search(args: argparse.Namespace) -> int:
    from rdarts.outputs import write_epochs, write_result
    from rdarts.search import Search

    cfg = _search_config(args)
    out = args.out or Path("runs") / f"{cfg.space}-{cfg.dataset}-seed{cfg.seed}"
    search = Search(cfg, out, progress=not args.no_progress)
    if search.resume():
        print(f"resuming {out} from epoch {search.next_epoch} ({search.status})", file=sys.stderr)

    def on_epoch(record: dict[str, Any]) -> None:
        write_epochs(out, search.records)
        event = f"  [{record['event']} -> keep epoch {record['stop_epoch']}]" if record["event"] else ""
        print(f"epoch {record['epoch']:3d}  train_acc {record['train_acc']:.3f}  valid_acc {record['valid_acc']:.3f}  "
              f"λ_max {_fmt(record['dominant_eigenvalue'])}  ratio {_fmt(record['eigenvalue_ratio'])}  "
              f"param-free {record['param_free_share']:.2f}  wd {record['weight_decay']:.1e}{event}", file=sys.stderr)

    try:
        result = search.run(on_epoch=on_epoch)
    except KeyboardInterrupt:
        print(f"rdarts: interrupted; run the same command again to resume from epoch {search.next_epoch}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    written = write_result(out, result, cfg)
    print(f"{result.status}: genotype of epoch {result.genotype_epoch} -> {out / 'genotype.json'}")
    print(result.genotype.to_json())
    for path in written:
        print(f"  wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rdarts", description="RobustDARTS searches and sweeps.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_search_parser(sub)
    # The sweep service and the reducer are layers over the engine; their modules import Ray and MLflow lazily.
    from rdarts.reduce.cli import add_parser as add_reduce_parser
    from rdarts.sweep.cli import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    add_reduce_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from rdarts.search import DivergedError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as e:
        print(f"rdarts: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as e:
        print(f"rdarts: {e}", file=sys.stderr)
        return EXIT_DIVERGED


if __name__ == "__main__":
    sys.exit(main())
