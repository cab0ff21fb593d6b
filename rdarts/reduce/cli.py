"""``rdarts reduce PATH``: select, retrain and log a sweep (``rdarts retrain`` is in ``rdarts.engine_cli``).

``add_parser(subparsers)`` adds the command to the main CLI; its handler ``(args) -> exit code`` raises
``rdarts.errors.UserError`` for bad input. Ray and MLflow are imported inside the handler only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rdarts.cli_args import Parser, dispatch, positive


def _reduce(args: argparse.Namespace) -> int:
    from rdarts.reduce.pipeline import reduce_experiment

    outcome = reduce_experiment(args.path, tracking_uri=args.tracking_uri, retrain=not args.no_retrain,
                                candidate_epochs=args.candidate_epochs, n_test=args.n_test,
                                runner="local" if args.local else "ray", address=args.address,
                                tracking=False if args.no_tracking else None)
    if outcome.exit_code:
        return outcome.exit_code
    return 1 if outcome.errors else 0


def _add_reduce(sub: Any) -> None:
    p = sub.add_parser("reduce", help="select, retrain and log the result of a sweep",
                       description="Collect a sweep folder into results.parquet, select its genotype (short "
                                   "retrains, validation split), retrain the winner and log it all to MLflow. "
                                   "Safe to run again: finished retrains are reused, MLflow runs are not duplicated.")
    p.add_argument("path", help="the sweep folder (<storage>/<name>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: tracking.uri of the sweep, else "
                                          "$MLFLOW_TRACKING_URI, else sqlite:///<path>/mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="write the results to disk only (default: MLflow too)")
    p.add_argument("--no-retrain", action="store_true", help="collect, select and log the searches only "
                                                             "(default: retrain as reduce.protocol says)")
    p.add_argument("--candidate-epochs", type=positive, help="epochs of each candidate's short retrain "
                                                              "(default: reduce.epochs of the sweep)")
    p.add_argument("--n-test", type=positive, help="test examples the retrains evaluate (default: all)")
    p.add_argument("--local", action="store_true", help="retrain in this process (default: as Ray Tune trials)")
    p.add_argument("--address", help="Ray cluster to join for the retrains (default: a new local Ray)")
    p.set_defaults(func=_reduce)


def _ui(args: argparse.Namespace) -> int:
    from rdarts.reduce.ui import serve_ui

    return serve_ui(args.path, tracking_uri=args.tracking_uri, port=args.port)


def _add_ui(sub: Any) -> None:
    p = sub.add_parser("ui", help="open a sweep's MLflow runs in the browser (MLflow UI on 127.0.0.1)",
                       description="Start the MLflow UI on 127.0.0.1 for a sweep's tracking store and print the "
                                   "address of its runs table; Ctrl-C stops it. With an MLflow server as the "
                                   "store, print its address instead.")
    p.add_argument("path", nargs="?", help="the sweep folder (<storage>/<name>)")
    p.add_argument("--tracking-uri", help="a tracking store instead of the sweep folder's (default: the sweep's)")
    p.add_argument("--port", type=positive, default=5000, help="port on 127.0.0.1 (default: 5000, "
                                                                "or the next free one)")
    p.set_defaults(func=_ui)


def add_parser(subparsers: Any) -> None:
    """Add ``reduce`` and ``ui`` to the main CLI's ``add_subparsers()`` object."""
    _add_reduce(subparsers)
    _add_ui(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rdarts.reduce.cli reduce PATH ...``: the same as ``rdarts reduce PATH ...``."""
    parser = Parser(prog="rdarts")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
