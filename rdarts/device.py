"""Device choice: CUDA where there is one, else CPU; never hard-wired inside modules."""

from __future__ import annotations

import torch

from rdarts.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(name)
