"""Where sweeps live: local folders (``~`` expanded, made absolute) or object storage (``s3://``, ``gs://``, any URI
pyarrow opens), read and written through one pyarrow filesystem interface; and the local mirror of a remote sweep.

On a cloud cluster Tune writes the sweep to ``$RDARTS_STORAGE`` (S3 or GCS), so that trials survive the loss of a
node. The reducer reads local files (pandas, the retrains' own Tune runs), so it mirrors such a folder into
``$RDARTS_CACHE/remote/`` (default ``~/.cache/rdarts``), reduces the mirror and copies what it wrote back next to
the searches. The searches' weight checkpoints stay behind: the reducer needs reports, not weights. A second
reduce reuses the mirror and fetches only files that changed size.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rdarts.errors import UserError

if TYPE_CHECKING:
    import pyarrow.fs

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "file")
# What the reducer writes into a sweep folder, copied back after a remote reduce.
WRITTEN = ("results.parquet", "reduce", "mlflow.db", "mlartifacts")


def is_remote(path: str | Path) -> bool:
    """A URI (``scheme://...``) rather than a local folder."""
    return "://" in str(path)


def normalise(path: str | Path) -> str:
    """A URI as given (without a trailing slash), a local folder with ``~`` expanded and made absolute."""
    text = str(path)
    return text.rstrip("/") if is_remote(text) else str(Path(text).expanduser().resolve())


def local_folder(path: str | Path) -> Path:
    """``path`` as a local folder; a URI is an error that says how to reduce it."""
    if is_remote(path):
        raise UserError(f"{path}: a local folder is needed here; 'rdarts reduce {path}' mirrors a folder on object "
                        "storage first")
    return Path(normalise(path))


def join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel}"


def filesystem(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The pyarrow filesystem of ``path`` and the path inside it."""
    import pyarrow
    import pyarrow.fs

    if not is_remote(path):
        return pyarrow.fs.LocalFileSystem(), normalise(path)
    try:
        return pyarrow.fs.FileSystem.from_uri(path)  # type: ignore[no-any-return]
    except (pyarrow.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: cannot open this storage ({e}); check the URI and the credentials") from None


def write_bytes(folder: str, rel: str, data: bytes) -> str:
    """Write ``folder/rel`` (parents created); returns its path or URI."""
    fs, base = filesystem(folder)
    target = join(base, rel)
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(target) as f:
        f.write(data)
    return join(folder, rel) if is_remote(folder) else target


def read_bytes(folder: str, rel: str) -> bytes | None:
    """The bytes of ``folder/rel``, or None when there is no such file."""
    import pyarrow.fs

    fs, base = filesystem(folder)
    if fs.get_file_info(join(base, rel)).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(join(base, rel)) as f:
        return f.read()  # type: ignore[no-any-return]


def list_names(folder: str) -> list[str] | None:
    """The names in ``folder``, or None when it is not a folder."""
    import pyarrow.fs

    fs, base = filesystem(folder)
    if fs.get_file_info(base).type != pyarrow.fs.FileType.Directory:
        return None
    return [Path(i.path).name for i in fs.get_file_info(pyarrow.fs.FileSelector(base))]


# ------------------------------------------------------------------------------------------------- the local mirror
def mirror_path(uri: str) -> Path:
    """The local mirror of ``uri``: readable name, plus a hash so that distinct URIs never share one."""
    cache = Path(os.environ.get("RDARTS_CACHE", "~/.cache/rdarts")).expanduser()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[1]).strip("_")[-80:]
    return cache / "remote" / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"


def _skipped(rel: str) -> bool:
    """Weight checkpoints of the searches (``<trial>/checkpoint_000012/...``): not needed to reduce."""
    parts = rel.split("/")
    return parts[0] not in WRITTEN and any(p.startswith("checkpoint_") for p in parts[1:])


def _copy(src: Any, dst: Any) -> None:
    while chunk := src.read(1 << 20):
        dst.write(chunk)


def download(uri: str, local: Path) -> int:
    """Mirror ``uri`` (a sweep folder) into ``local``; returns the number of files fetched."""
    import pyarrow.fs

    fs, base = filesystem(uri)
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
            _copy(src, dst)
        tmp.replace(target)  # a fetch cut short never looks complete
        fetched += 1
    return fetched


def upload(local: Path, uri: str, names: tuple[str, ...] = WRITTEN) -> int:
    """Copy what the reducer wrote (``names``, where present) from ``local`` back to ``uri``; returns files sent."""
    fs, base = filesystem(uri)
    sent = 0
    for name in names:
        src = local / name
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
        for path in files:
            target = join(base, path.relative_to(local).as_posix())
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as f, fs.open_output_stream(target) as out:
                _copy(f, out)
            sent += 1
    return sent
