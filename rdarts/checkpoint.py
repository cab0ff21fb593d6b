"""Per-epoch checkpoints on disk: atomic writes, a pointer to the latest, loading with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so it loads without unpickling code.
The pointer ``latest.json`` is replaced atomically after the checkpoint file is complete: a crash at any moment
leaves either the old or the new latest, never a torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def _atomic_write_bytes(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    """``epoch_NNN.pt`` files in one folder, plus ``latest.json`` naming the newest state."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:03d}.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(epoch)
        _atomic_write_bytes(path, lambda f: torch.save(state, f))
        pointer = json.dumps({"epoch": epoch, "file": path.name}).encode()
        _atomic_write_bytes(self.folder / "latest.json", lambda f: f.write(pointer))
        return path

    def load(self, epoch: int) -> dict[str, Any]:
        path = self.path(epoch)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint for epoch {epoch} at {path}")
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]

    def latest_epoch(self) -> int | None:
        pointer = self.folder / "latest.json"
        if not pointer.is_file():
            return None
        return int(json.loads(pointer.read_text())["epoch"])

    def load_latest(self) -> dict[str, Any] | None:
        epoch = self.latest_epoch()
        return None if epoch is None else self.load(epoch)
