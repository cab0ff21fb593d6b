"""``rdarts search`` and ``rdarts retrain``: the engine's two commands (no Ray, no MLflow).

``add_parser(subparsers)`` adds both to the main CLI; handlers ``(args) -> exit code`` raise
``rdarts.errors.UserError`` for bad input. The engine is imported inside the handlers, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rdarts.cli_args import EXIT_INTERRUPTED, boolean, positive
from rdarts.config import SearchConfig
from rdarts.errors import UserError


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
    a("--cutout", type=boolean, default=None, help="force cutout on/off (default: on iff --drop-path > 0)")
    a("--augment", type=boolean, default=True, help="random crop and flip on the search's batches (default: true, "
      "as the reference)")
    a("--early-stop", choices=("off", "es", "ada"), default="off")
    a("--ev-every", type=int, default=2, help="epochs between Hessian eigenvalues (default: 2; the last epoch too)")
    a("--hessian-batches", type=int, default=1, help="validation batches per λ_max (default: 1, as the reference)")
    a("--es-preset", choices=("reference", "paper"), default="reference",
      help="DARTS-ES constants: the released code's (default) or the paper's")
    a("--seed", type=int, default=1)
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    a("--amp", type=boolean, default=False, help="bf16 autocast for the training passes on CUDA (default: false; "
      "the reference is fp32)")
    a("--out", type=Path, default=None, help="output folder (default: runs/<space>-<dataset>-seed<seed>)")
    a("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)


def _search_config(args: argparse.Namespace) -> SearchConfig:
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


def _retrain(args: argparse.Namespace) -> int:
    from rdarts.config import ConfigError, RetrainConfig
    from rdarts.retrain import retrain
    from rdarts.spaces import Genotype

    path = Path(args.genotype)
    try:
        genotype = Genotype.from_json(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: not a genotype JSON ({e}); expected {{\"normal\": [[op, input], ...], "
                        "\"normal_concat\": [...], \"reduce\": [...], \"reduce_concat\": [...]}") from None
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "layers": args.layers, "channels": args.channels, "batch_size": args.batch_size,
        "n_train": args.n_train, "n_test": args.n_test, "image_size": args.image_size, "seed": args.seed,
        "device": args.device, "data_root": args.data_root, "valid_fraction": args.valid_fraction,
        "drop_path": args.drop_path, "lr": args.lr}.items() if v is not None}
    # Cutout of half the image side (the reference's 16 px at 32 px) unless given: valid at every image size.
    overrides["cutout_length"] = args.cutout_length
    if args.download:
        overrides["download"] = True
    try:
        cfg = RetrainConfig.protocol_defaults(args.dataset, **overrides)
    except ConfigError as e:
        raise UserError(str(e)) from None
    out = args.out or Path("runs") / f"retrain-{args.dataset}-{path.stem}-seed{cfg.seed}"

    def on_epoch(r: dict[str, Any]) -> None:
        print(f"epoch {r['epoch']:3d}  train_loss {r['train_loss']:.3f}  train_acc {r['train_acc']:.3f}  "
              f"valid_acc {r['valid_acc']:.3f}  test_error {r['test_error']:.2f}%", file=sys.stderr)

    result = retrain(genotype, cfg, out, progress=not args.no_progress, on_epoch=on_epoch)
    summary = {"test_error": result.test_error, "valid_acc": result.valid_acc, "params": result.params,
               "config": cfg.to_dict(), "genotype": genotype.to_dict()}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "result.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"test error {result.test_error:.2f}% ({result.params} parameters) -> {Path(out) / 'result.json'}")
    return 0


def _add_retrain(sub: Any) -> None:
    p = sub.add_parser("retrain", help="retrain a genotype from scratch and report its test error",
                       description="Retrain GENOTYPE.json (defaults: the published protocol for the dataset). "
                                   "Run again with the same --out to resume.")
    a = p.add_argument
    a("genotype", help="a genotype.json (as written by 'rdarts search' or 'rdarts reduce')")
    a("--dataset", required=True, help="cifar10, cifar100, svhn, fashion-mnist, digits")
    a("--data-root", help="folder holding the dataset")
    a("--download", action="store_true", help="download the dataset into --data-root if missing")
    a("--epochs", type=positive)
    a("--layers", type=positive)
    a("--channels", type=positive)
    a("--batch-size", type=positive)
    a("--n-train", type=positive, help="training examples used (default: all)")
    a("--n-test", type=positive, help="test examples evaluated (default: all)")
    a("--image-size", type=positive)
    a("--valid-fraction", type=float, help="share of training examples held out for validation (default: 0)")
    a("--drop-path", type=float)
    a("--cutout-length", type=positive, help="cutout square side (default: half the image side)")
    a("--lr", type=float)
    a("--seed", type=int)
    a("--device", help="auto, cpu, cuda, cuda:N")
    a("--out", type=Path, help="output folder (default: runs/retrain-<dataset>-<file>-seed<seed>)")
    a("--no-progress", action="store_true")
    p.set_defaults(func=_retrain)


def add_parser(subparsers: Any) -> None:
    """Add ``search`` and ``retrain`` to the main CLI's ``add_subparsers()`` object."""
    _add_search_parser(subparsers)
    _add_retrain(subparsers)
