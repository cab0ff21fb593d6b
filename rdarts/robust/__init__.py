"""The robust-DARTS catalogue as hooks on one search loop: SDARTS-RS/ADV, DARTS-, β-DARTS, PC-DARTS.

``make_method(cfg)`` gives the ``MethodHooks`` of ``cfg.method`` (``rdarts.config.METHODS``); ``rdarts.search``
calls it at its hook points (``rdarts.robust.hooks``). Each method's module cites the released code it follows.
"""

from __future__ import annotations

from rdarts.config import ConfigError, SearchConfig
from rdarts.robust.beta_darts import BetaDarts
from rdarts.robust.darts_minus import DartsMinus
from rdarts.robust.hooks import MethodHooks
from rdarts.robust.pc_darts import PCDarts
from rdarts.robust.sdarts import SDARTS

__all__ = ["MethodHooks", "make_method"]


def make_method(cfg: SearchConfig) -> MethodHooks:
    """The hooks of ``cfg.method``."""
    m = cfg.method
    if m == "darts":
        return MethodHooks()
    if m in ("sdarts-rs", "sdarts-adv"):
        return SDARTS(adversarial=m == "sdarts-adv")
    if m == "darts-minus":
        return DartsMinus()
    if m == "beta-darts":
        return BetaDarts()
    if m == "pc-darts":
        return PCDarts(cfg.epochs)
    raise ConfigError(f"unknown method {m!r}")  # SearchConfig's rule lists the valid ones first
