"""``rdarts search`` and ``rdarts retrain``: the engine's two commands (no Ray, no MLflow).

``add_parser(subparsers)`` adds both to the main CLI; handlers ``(args) -> exit code`` raise
``rdarts.errors.UserError`` for bad input. The engine is imported inside the handlers, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rdarts.cli_args import EXIT_INTERRUPTED, add_settings, settings_from
from rdarts.config import RetrainConfig, SearchConfig
from rdarts.errors import UserError
from rdarts.stopping import PRESETS

PRESET_FIELDS = ("es_window", "es_delta", "es_factor", "es_start_epoch")
SEARCH_FLAGS = tuple(f.name for f in dataclasses.fields(SearchConfig)
                     if f.name not in ("space_ops", "extra", *PRESET_FIELDS))
RETRAIN_FLAGS = tuple(f.name for f in dataclasses.fields(RetrainConfig))
# A second-order search step of the reference supernet (8 cells x 16 channels, batch 64, 32 px), measured on the
# 2-core CPU machine of README "Measured": the scale of the warning about full-size searches on a CPU.
REFERENCE_CPU_STEP_S = 4.72
FIRST_ORDER_SHARE = 1.68 / 4.72
WARN_CPU_HOURS = 1.0


def _add_search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="run one RobustDARTS search", description="Run one RobustDARTS search "
                       "(defaults: the reference's settings). Run again with the same --out to resume.")
    add_settings(p, SearchConfig, SEARCH_FLAGS)
    p.add_argument("--es-preset", choices=tuple(PRESETS), default="reference",
                   help="DARTS-ES constants: the released code's, or the paper's wording (default: reference)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<space>-<dataset>-seed<seed>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.set_defaults(func=_cmd_search)


def _search_config(args: argparse.Namespace) -> SearchConfig:
    rule = PRESETS[args.es_preset]
    values = settings_from(args, SEARCH_FLAGS)
    if args.es_preset != "reference":
        values["ev_every"] = rule.ev_every
    return SearchConfig(**values, es_window=rule.window, es_delta=rule.delta, es_factor=rule.factor,
                        es_start_epoch=rule.start_epoch)


def cpu_hours(cfg: SearchConfig, n_images: int) -> float:
    """About how long ``cfg`` takes on a 2-core CPU (scaled from the reference step time)."""
    size = (cfg.layers / 8) * (cfg.channels / 16) ** 2 * ((cfg.image_size or 32) / 32) ** 2 * (cfg.batch_size / 64)
    step = REFERENCE_CPU_STEP_S * size * (FIRST_ORDER_SHARE if cfg.order == "first" else 1.0)
    steps = max(1, (cfg.n_train or n_images) // 2 // cfg.batch_size) * cfg.epochs
    return step * steps / 3600


def _warn_if_long(search: Any) -> None:
    cfg = search.cfg
    hours = cpu_hours(cfg, len(search.data.labels))
    if search.device.type == "cpu" and hours > WARN_CPU_HOURS:
        print(f"warning: this search runs on the CPU and needs about {hours:.0f} h here ({cfg.layers} cells x "
              f"{cfg.channels} channels, {cfg.n_train or len(search.data.labels)} images, {cfg.epochs} epochs, "
              f"{cfg.order} order; estimated from a measured reference step). For a quick look make it small, e.g. "
              "--n-train 1024 --image-size 16 --layers 3 --channels 8 --epochs 4 --order first; Ctrl-C stops it "
              "and the same command resumes it.", file=sys.stderr)


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4g}"


def _cmd_search(args: argparse.Namespace) -> int:
    from rdarts.outputs import write_epochs, write_result
    from rdarts.search import Search

    cfg = _search_config(args)
    out = args.out or Path("runs") / f"{cfg.space}-{cfg.dataset}-seed{cfg.seed}"
    search = Search(cfg, out, progress=not args.no_progress)
    _warn_if_long(search)
    if search.resume():
        print(f"resuming {out} from epoch {search.next_epoch} ({search.status})", file=sys.stderr)

    def on_epoch(record: dict[str, Any]) -> None:
        write_epochs(out, search.records)
        verb = {"es_stop": "keep", "ada_rollback": "roll back to", "ada_ignored": "ignored; target"}
        event = (f"  [{record['event']}: {verb.get(record['event'], 'epoch')} epoch {record['target_epoch']}]"
                 if record["event"] else "")
        se = record["eigenvalue_se"]
        spread = f" ± {se:.2g}" if se == se else ""  # NaN with one batch
        print(f"epoch {record['epoch']:3d}  train_acc {record['train_acc']:.3f}  valid_acc {record['valid_acc']:.3f}  "
              f"λ_max {_fmt(record['dominant_eigenvalue'])}{spread}  ratio {_fmt(record['eigenvalue_ratio'])}  "
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
    from rdarts.config import ConfigError
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
    try:
        cfg = RetrainConfig(**settings_from(args, RETRAIN_FLAGS))
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
                       description="Retrain GENOTYPE.json (defaults: the reference's protocol, at the published "
                                   "network size for the dataset). Run again with the same --out to resume.")
    p.add_argument("genotype", help="a genotype.json (as written by 'rdarts search' or 'rdarts reduce')")
    add_settings(p, RetrainConfig, RETRAIN_FLAGS, required=("dataset",))
    p.add_argument("--out", type=Path, help="output folder (default: runs/retrain-<dataset>-<file>-seed<seed>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.set_defaults(func=_retrain)


def add_parser(subparsers: Any) -> None:
    """Add ``search`` and ``retrain`` to the main CLI's ``add_subparsers()`` object."""
    _add_search_parser(subparsers)
    _add_retrain(subparsers)
