"""Sweep folders on object storage (``s3://``, ``gs://``, any URI pyarrow opens): a local mirror to reduce.

On a cloud cluster Tune writes the sweep to ``$RDARTS_STORAGE`` (S3 or GCS), so that trials survive the loss of a
node. The reducer reads local files (pandas, the retrains' own Tune runs), so ``reduce_experiment`` mirrors the
folder into ``$RDARTS_CACHE/remote/`` (default ``~/.cache/rdarts``), reduces the mirror and copies what it wrote back
next to the searches. The searches' weight checkpoints stay behind: the reducer needs reports, not weights.
A second reduce reuses the mirror and fetches only files that changed size.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from rdarts.errors import UserError

# What the reducer writes into a sweep folder, copied back after a remote reduce.
WRITTEN = ("results.parquet", "reduce", "mlflow.db", "mlartifacts")


def is_remote(path: str | Path) -> bool:
    return "://" in str(path)


def mirror_path(uri: str) -> Path:
    """The local mirror of ``uri``: readable name, plus a hash so that distinct URIs never share one."""
    cache = Path(os.environ.get("RDARTS_CACHE", "~/.cache/rdarts")).expanduser()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[1]).strip("_")[-80:]
    return cache / "remote" / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, OSError) as e:
        raise UserError(f"{uri}: cannot open this storage ({e}); check the URI and the credentials") from None


def _skipped(rel: str) -> bool:
    """Weight checkpoints of the searches (``<trial>/checkpoint_000012/...``): not needed to reduce."""
    parts = rel.split("/")
    return parts[0] not in WRITTEN and any(p.startswith("checkpoint_") for p in parts[1:])


def download(uri: str, local: Path) -> int:
    """Mirror ``uri`` (a sweep folder) into ``local``; returns the number of files fetched."""
    import pyarrow.fs

    fs, base = _filesystem(uri)
    if fs.get_file_info(base).type != pyarrow.fs.FileType.Directory:
        raise UserError(f"{uri}: no such folder; give the folder of a sweep (<storage>/<name>)")
    fetched = 0
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        rel = info.path[len(base):].lstrip("/")
        target = local / rel
        if _skipped(rel) or (target.is_file() and target.stat().st_size == info.size):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(target)  # a fetch cut short never looks complete
        fetched += 1
    return fetched


def upload(local: Path, uri: str, names: tuple[str, ...] = WRITTEN) -> int:
    """Copy what the reducer wrote (``names``, where present) from ``local`` back to ``uri``; returns files sent."""
    fs, base = _filesystem(uri)
    sent = 0
    for name in names:
        src = local / name
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
        for path in files:
            target = f"{base}/{path.relative_to(local).as_posix()}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as f, fs.open_output_stream(target) as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
            sent += 1
    return sent
