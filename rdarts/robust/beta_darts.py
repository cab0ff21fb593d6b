"""β-DARTS (Ye et al., CVPR 2022): the Beta-decay regulariser on the α loss.

Read from Sunshine-Ye/Beta-DARTS@f307704: ``optimizers/darts/architect.py`` (``mlc_loss`` and ``_backward_step``,
the "one line of code" its README points to) and ``nasbench201/train_search.py`` (the search that runs it). As that
code:

- the term is the mean over edges of ``logsumexp`` over each edge's α (``torch.mean(torch.logsumexp(α, -1))``); its
  gradient is ``softmax(α_edge) / n_edges``, which pulls every α of an edge down in proportion to its weight and so
  keeps the softmax from saturating. rdarts has two α matrices (normal, reduce) where NAS-Bench-201 has one; the
  mean is over the edges of both (each edge counts once);
- it is added to the first-order α loss with the weight ``λ_e = 50 e / 100`` (``weights = 0 + 50*epoch/100``) in a
  100-epoch search: rdarts takes it as ``λ_e = 50 e / E``, 0 at the first epoch rising linearly towards 50 over
  the search's E epochs (on a 50-epoch search the code's literal ``e / 2`` would stop at 24.5);
- the released second-order branch (``_backward_step_unrolled``) drops the term; rdarts adds it in either order
  (its gradient does not depend on the weights), so ``order: second`` is β-DARTS with a second-order DARTS step.

λ_max is the Hessian of the validation loss alone (plus the arch weight decay), as for every method, so that it
compares across methods; the Beta-decay term's own Hessian is not in it.
"""

from __future__ import annotations

import torch

from rdarts.robust.hooks import MethodHooks
from rdarts.supernet import Supernet

LAMBDA_MAX = 50.0
"""The weight the code's ``50*epoch/100`` reaches at the end of its 100-epoch search."""


def beta_decay_weight(epoch: int, epochs: int) -> float:
    """λ at ``epoch`` (0-based) of ``epochs``: linear from 0 towards ``LAMBDA_MAX``."""
    return LAMBDA_MAX * epoch / epochs


def beta_decay_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """The mean over all edges (rows of every α matrix) of logsumexp over the edge's α."""
    return torch.cat([torch.logsumexp(a, dim=-1) for a in alphas]).mean()


class BetaDarts(MethodHooks):
    name = "beta-darts"

    def __init__(self) -> None:
        self.weight = 0.0

    def begin_epoch(self, model: Supernet, epoch: int, epochs: int) -> None:
        self.weight = beta_decay_weight(epoch, epochs)

    def alpha_loss(self, model: Supernet) -> torch.Tensor | None:
        if self.weight == 0.0:
            return None  # λ = 0 at the first epoch: the plain DARTS step, bit for bit
        return self.weight * beta_decay_loss(model.alpha_parameters())
