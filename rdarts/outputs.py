"""What a search leaves on disk: ``epochs.parquet``, ``genotype.json``, the eigenvalue curve and the cell diagram.

``epochs.parquet`` is rewritten after every epoch (a row per epoch, rolled-back ADA branches included), so a crash
loses nothing that finished. Plots are drawn at the end, and whenever asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rdarts.config import SearchConfig
from rdarts.search import SearchResult


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per epoch record; ``dominant_eigenvalue`` is NaN where it was not computed."""
    return pd.DataFrame.from_records(list(records))


def write_epochs(out_dir: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "epochs.parquet"
    tmp = path.with_name(".epochs.parquet.tmp")
    records_frame(records).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_plots(out_dir: str | os.PathLike[str], result: SearchResult, cfg: SearchConfig) -> list[Path]:
    from rdarts.plots import plot_eigenvalues, plot_genotype

    out = Path(out_dir)
    title = f"{cfg.space} / {cfg.dataset} / seed {cfg.seed} / {cfg.order} order / early stop {cfg.early_stop}"
    return [
        plot_eigenvalues(result.records, out / "eigenvalues.png", title=title, factor=cfg.es_factor),
        plot_genotype(result.genotype, out / "genotype.png",
                      title=f"{cfg.space} / {cfg.dataset}: genotype of epoch {result.genotype_epoch}"),
    ]


def write_result(out_dir: str | os.PathLike[str], result: SearchResult, cfg: SearchConfig) -> list[Path]:
    """``genotype.json`` (the reference's shape) and ``result.json`` (how the search ended), then the plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / "genotype.json", json.dumps(result.genotype.to_dict(), indent=1) + "\n")
    summary = {
        "status": result.status,
        "genotype_epoch": result.genotype_epoch,
        "stop_epoch": result.stop_epoch,
        "epochs_run": len(result.records),
        "final_dominant_eigenvalue": next((r["dominant_eigenvalue"] for r in reversed(result.records)
                                           if r["dominant_eigenvalue"] == r["dominant_eigenvalue"]), None),
        "config": cfg.to_dict(),
    }
    _atomic_write_text(out / "result.json", json.dumps(summary, indent=1) + "\n")
    written = [out / "genotype.json", out / "result.json", write_epochs(out, result.records)]
    return written + write_plots(out, result, cfg)
