"""``rdarts sweep ...``: validate, run, resume and submit sweeps.

``add_parser(subparsers)`` adds the ``sweep`` command to the main CLI; every subcommand sets ``func`` to a handler
``(args) -> exit code`` that raises ``rdarts.errors.UserError`` for bad input (the main CLI prints it on one line and
exits 2). Ray is imported inside the handlers only: ``import rdarts.sweep.cli`` works without it.

Exit codes (``rdarts.cli_args``): 0 all finished; 1 some trials failed or diverged (or a job did not succeed);
2 bad input, nothing started; 3 results kept but the MLflow server unreachable.
``python -m rdarts.sweep.cli SUBCOMMAND ...`` runs the same handlers without the main CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rdarts.cli_args import EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, Parser, dispatch

if TYPE_CHECKING:
    from rdarts.sweep.runner import SweepOutcome
    from rdarts.sweep.spec import SweepSpec


def _validate(args: argparse.Namespace) -> int:
    from rdarts.sweep.spec import load_sweep

    spec = load_sweep(args.file)
    trials = spec.trials()
    print(f"{args.file}: valid; {len(trials)} trial(s)")
    if args.list:
        for t in trials:
            print(f"  t{t['index']:03d}  {t['setting']:<48}  {t['method']}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from rdarts.sweep.spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _reduce_after(experiment_path: str, spec: SweepSpec, tracking_uri: str | None = None) -> int:
    """The reduce step after a sweep (``rdarts.reduce``, imported here: it brings MLflow); its exit code."""
    from rdarts.reduce import reduce_sweep

    return int(reduce_sweep(experiment_path, spec, tracking_uri))


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rdarts.sweep.runner import run_sweep
    from rdarts.sweep.spec import load_sweep

    spec = load_sweep(args.file)
    outcome = run_sweep(spec, args.address, storage=args.storage, spec_text=Path(args.file).read_text(),
                        tracking_uri=args.tracking_uri, verbose=2 if args.verbose else 1)
    return _after(outcome, spec, args)


def _after(outcome: SweepOutcome, spec: SweepSpec, args: argparse.Namespace) -> int:
    """The reduce step, unless asked not to or no trial returned a genotype; the exit code of the whole run."""
    failed = EXIT_FAILED if outcome.num_errors else EXIT_OK
    if args.no_reduce:
        return failed
    if not outcome.num_genotypes:
        print("no trial returned a genotype, so there is nothing to reduce:", *outcome.error_summary(), sep="\n  ")
        return EXIT_FAILED
    return max(failed, _reduce_after(outcome.experiment_path, spec, args.tracking_uri))


def _resume(args: argparse.Namespace) -> int:
    from rdarts.experiment import load_spec
    from rdarts.sweep.runner import resume_sweep

    outcome = resume_sweep(args.path, args.address, verbose=2 if args.verbose else 1)
    return _after(outcome, load_spec(outcome.experiment_path), args)


def _submit(args: argparse.Namespace) -> int:
    from rdarts.sweep.jobs import submit_sweep

    run_args = ((["--no-reduce"] if args.no_reduce else []) + (["--storage", args.storage] if args.storage else [])
                + (["--tracking-uri", args.tracking_uri] if args.tracking_uri else []))
    job_id = submit_sweep(args.file, args.address, python=args.python, run_args=run_args)
    print(f"submitted {job_id}")
    print(f"  follow it:  rdarts sweep logs {job_id} --address {args.address} --follow")
    print(f"  status:     rdarts sweep status {job_id} --address {args.address}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from rdarts.sweep.jobs import describe_job

    info = describe_job(args.job_id, args.address)
    print(f"{info['job_id']}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))
    return 0 if info["status"] in ("PENDING", "RUNNING", "SUCCEEDED") else 1


def _logs(args: argparse.Namespace) -> int:
    from rdarts.sweep.jobs import job_follow, job_logs

    if args.follow:
        status = job_follow(args.job_id, args.address)
        print(f"{args.job_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    sys.stdout.write(job_logs(args.job_id, args.address))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from rdarts.sweep.jobs import job_stop

    stopped = job_stop(args.job_id, args.address)
    print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
    return 0


def _tracking_uri(value: str) -> str:
    from rdarts.sweep.settings import TRACKING_SCHEMES

    if value.split(":", 1)[0] not in TRACKING_SCHEMES:
        raise argparse.ArgumentTypeError(f"must be an MLflow tracking URI "
                                         f"({', '.join(s + ':' for s in TRACKING_SCHEMES)}), got {value!r}")
    return value


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also show the trials' own output and Ray's INFO "
                                                                "lines (default: the table and the results only)")


def _tracking_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", type=_tracking_uri,
                   help="MLflow URI of the live runs and the reduce step (default: tracking.uri of the file, else "
                        "$MLFLOW_TRACKING_URI, "
                        "else sqlite:///<sweep folder>/mlflow.db)")


def _add_commands(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a sweep file and count its trials")
    p.add_argument("file", help="the sweep file (YAML)")
    p.add_argument("--list", action="store_true", help="also list the trials (default: the count only)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("schema", help="print the JSON schema of sweep files")
    p.set_defaults(func=_schema)

    p = sub.add_parser("run", help="run a sweep on a local Ray (or the cluster at --address)", epilog=EXIT_CODES_HELP)
    p.add_argument("file", help="the sweep file (YAML)")
    p.add_argument("--address", help="Ray cluster to join (host:6379, ray://host:10001, auto) "
                                     "(default: a new local Ray on 127.0.0.1)")
    p.add_argument("--storage", help="results folder or URI (default: storage: of the file)")
    p.add_argument("--no-reduce", action="store_true", help="skip the reduce step after the sweep (default: reduce)")
    _verbose_flag(p)
    _tracking_flag(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("resume", help="continue an interrupted sweep from its folder (<storage>/<name>)",
                       epilog=EXIT_CODES_HELP)
    p.add_argument("path", help="the sweep folder (<storage>/<name>)")
    p.add_argument("--address", help="Ray cluster to join (default: a new local Ray on 127.0.0.1)")
    p.add_argument("--no-reduce", action="store_true", help="skip the reduce step after the sweep (default: reduce)")
    _verbose_flag(p)
    _tracking_flag(p)
    p.set_defaults(func=_resume)

    p = sub.add_parser("submit", help="run a sweep as a Ray Job on a cluster (the project folder travels)")
    p.add_argument("file", help="the sweep file, inside the project folder (it travels with the code)")
    p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
    p.add_argument("--python", help="interpreter on the cluster (default: this one for a local cluster, else python)")
    p.add_argument("--storage", help="results folder or URI on the cluster (default: storage: of the file)")
    p.add_argument("--no-reduce", action="store_true", help="skip the reduce step after the sweep (default: reduce)")
    _tracking_flag(p)
    p.set_defaults(func=_submit)

    for name, handler, what in (("status", _status, "show a submitted sweep's state"),
                                ("logs", _logs, "print a submitted sweep's output"),
                                ("stop", _stop, "stop a submitted sweep")):
        p = sub.add_parser(name, help=what)
        p.add_argument("job_id", help="as 'rdarts sweep submit' printed it")
        p.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://127.0.0.1:8265")
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true",
                           help="print the output as it comes until the job ends; exit 0 only if it succeeded")
        p.set_defaults(func=handler)


def add_parser(subparsers: Any) -> None:
    """Add ``sweep`` and its subcommands to the main CLI's ``add_subparsers()`` object."""
    p = subparsers.add_parser("sweep", help="run many searches as one Ray Tune sweep",
                              description="Validate, run, resume and submit sweep files (see sweeps/).")
    sub = p.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")
    _add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rdarts.sweep.cli ...``: the same as ``rdarts sweep ...``."""
    parser = Parser(prog="rdarts sweep", description="Validate, run, resume and submit sweep files (see sweeps/).")
    _add_commands(parser.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND", parser_class=Parser))
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
