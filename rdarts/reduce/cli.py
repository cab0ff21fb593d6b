"""``rdarts reduce PATH`` and ``rdarts retrain GENOTYPE.json``.

``add_parser(subparsers)`` adds both commands to the main CLI; handlers ``(args) -> exit code`` raise
``rdarts.errors.UserError`` for bad input. Ray and MLflow are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rdarts.errors import UserError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _reduce(args: argparse.Namespace) -> int:
    from rdarts.reduce.pipeline import reduce_experiment

    outcome = reduce_experiment(args.path, tracking_uri=args.tracking_uri, retrain=not args.no_retrain,
                                candidate_epochs=args.candidate_epochs, n_test=args.n_test,
                                runner="local" if args.local else "ray", address=args.address,
                                tracking=False if args.no_tracking else None)
    if outcome.exit_code:
        return outcome.exit_code
    return 1 if outcome.errors else 0


def _retrain(args: argparse.Namespace) -> int:
    from rdarts.config import ConfigError
    from rdarts.retrain import RetrainConfig, retrain
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


def _add_reduce(sub: Any) -> None:
    p = sub.add_parser("reduce", help="select, retrain and log the result of a sweep",
                       description="Collect a sweep folder into results.parquet, select its genotype (short "
                                   "retrains, validation split), retrain the winner and log it all to MLflow. "
                                   "Safe to run again: finished retrains are reused, MLflow runs are not duplicated.")
    p.add_argument("path", help="the sweep folder (<storage>/<name>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: tracking.uri of the sweep, else "
                                          "$MLFLOW_TRACKING_URI, else sqlite:///<path>/mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="write the results to disk only")
    p.add_argument("--no-retrain", action="store_true", help="collect, select and log the searches only")
    p.add_argument("--candidate-epochs", type=_positive, help="epochs of each candidate's short retrain "
                                                              "(default: reduce.epochs of the sweep)")
    p.add_argument("--n-test", type=_positive, help="test examples the retrains evaluate (default: all)")
    p.add_argument("--local", action="store_true", help="retrain in this process instead of as Ray Tune trials")
    p.add_argument("--address", help="Ray cluster to join for the retrains; local Ray if omitted")
    p.set_defaults(func=_reduce)


def _add_retrain(sub: Any) -> None:
    p = sub.add_parser("retrain", help="retrain a genotype from scratch and report its test error",
                       description="Retrain GENOTYPE.json (defaults: the published protocol for the dataset). "
                                   "Run again with the same --out to resume.")
    a = p.add_argument
    a("genotype", help="a genotype.json (as written by 'rdarts search' or 'rdarts reduce')")
    a("--dataset", required=True, help="cifar10, cifar100, svhn, fashion-mnist, digits")
    a("--data-root", help="folder holding the dataset")
    a("--download", action="store_true", help="download the dataset into --data-root if missing")
    a("--epochs", type=_positive)
    a("--layers", type=_positive)
    a("--channels", type=_positive)
    a("--batch-size", type=_positive)
    a("--n-train", type=_positive, help="training examples used (default: all)")
    a("--n-test", type=_positive, help="test examples evaluated (default: all)")
    a("--image-size", type=_positive)
    a("--valid-fraction", type=float, help="share of training examples held out for validation (default: 0)")
    a("--drop-path", type=float)
    a("--cutout-length", type=_positive, help="cutout square side (default: half the image side)")
    a("--lr", type=float)
    a("--seed", type=int)
    a("--device", help="auto, cpu, cuda, cuda:N")
    a("--out", type=Path, help="output folder (default: runs/retrain-<dataset>-<file>-seed<seed>)")
    a("--no-progress", action="store_true")
    p.set_defaults(func=_retrain)


def add_parser(subparsers: Any) -> None:
    """Add ``reduce`` and ``retrain`` to the main CLI's ``add_subparsers()`` object."""
    _add_reduce(subparsers)
    _add_retrain(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rdarts.reduce.cli reduce|retrain ...``: the same as ``rdarts reduce|retrain ...``."""
    from rdarts.cli import main as rdarts_main

    return rdarts_main(list(sys.argv[1:] if argv is None else argv))

if __name__ == "__main__":
    sys.exit(main())
