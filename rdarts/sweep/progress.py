"""The live table of a running sweep: Tune's CLIReporter, naming the sweep's folder instead of Ray's session folder."""

from __future__ import annotations

from ray.tune import CLIReporter

from rdarts import keys

PROGRESS = "progress"
"""A report key: epochs done of all, ``14/14``, so that the table reads as people count (the records count from 0)."""
METRICS = {PROGRESS: "epochs", "valid_acc": "valid_acc", keys.LAST_EIGENVALUE: "λ_max", "eigenvalue_ratio": "ratio",
           keys.SEARCH_STATUS: "search"}
COLUMNS = {f"{keys.TRIAL}/setting": "setting", f"{keys.TRIAL}/method": "method"}


class SweepReporter(CLIReporter):
    """Every 30 s and at the end: the sweep folder, the trial counts, a row per trial."""

    def __init__(self, experiment_path: str):
        super().__init__(parameter_columns=COLUMNS, metric_columns=METRICS, max_report_frequency=30,
                         max_column_length=40, max_progress_rows=100)
        self.experiment_path = experiment_path

    def _print(self, msg: str) -> None:
        lines = [f"Sweep folder: {self.experiment_path}" if line.startswith("Result logdir:") else line
                 for line in msg.splitlines()]
        print("\n".join(lines), flush=True)
