"""What a resumable training loop saves and checks besides its model: settings stamp, random streams, autocast.

Search and Retrain both resume bit for bit from a checkpoint. They share three rules: a checkpoint records the
settings that affect the result and refuses to load under other ones; it carries every random stream (torch's global
one, the data generator, CUDA's); and mixed precision is bf16 autocast on CUDA only when asked for (the reference is
fp32 throughout, so ``amp`` is off by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from rdarts.config import ConfigError


def autocast(amp: bool, device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast when ``amp`` is on and the device is CUDA; otherwise nothing (fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def settings_stamp(settings: Mapping[str, Any]) -> str:
    """The result-affecting settings as a checkpoint stores them."""
    return json.dumps(dict(settings), sort_keys=True)


def check_settings(settings: Mapping[str, Any], state: Mapping[str, Any], *, also_differ: Iterable[str] = (),
                   fix: str = "use a new output folder, or the settings it was started with") -> None:
    """Refuse a checkpoint written with other result-affecting settings, naming each one that differs."""
    theirs = json.loads(state["config"])
    diff = sorted(k for k in set(settings) | set(theirs) if settings.get(k) != theirs.get(k))
    diff += list(also_differ)
    if diff:
        raise ConfigError(f"the checkpoint was written with other settings ({', '.join(diff)}); {fix}")


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every random stream a run draws from, to put in its checkpoint."""
    state = {"torch_rng": torch.get_rng_state(), "data_rng": generator.get_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Put back the streams ``rng_state`` saved."""
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["data_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
