"""rdarts: RobustDARTS (Zela et al., ICLR 2020) in modern PyTorch, run as hyperparameter sweeps on Ray Tune.

The engine (spaces, ops, supernet, search, Hessian, stopping rule, retraining network, data) is pure PyTorch and
imports neither Ray nor MLflow; ``rdarts.sweep`` and the reducer are thin layers over it. The names below are
loaded on first use, so that ``import rdarts.config`` (settings, sweep files) does not load torch.
"""

from __future__ import annotations

from rdarts.lazy_exports import lazy_exports

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "ConfigError": "rdarts.config",
    "DivergedError": "rdarts.errors",
    "ESRule": "rdarts.stopping",
    "EpochRecord": "rdarts.records",
    "Genotype": "rdarts.spaces",
    "PAPER": "rdarts.stopping",
    "PRIMITIVES": "rdarts.spaces",
    "REFERENCE_CODE": "rdarts.stopping",
    "RetrainConfig": "rdarts.config",
    "Search": "rdarts.search",
    "SearchConfig": "rdarts.config",
    "SearchResult": "rdarts.records",
    "SearchSpace": "rdarts.spaces",
    "Supernet": "rdarts.supernet",
    "UserError": "rdarts.errors",
    "dense_hessian": "rdarts.hessian",
    "derive_genotype": "rdarts.supernet",
    "dominant_eigenvalue": "rdarts.hessian",
    "es_stop_epoch": "rdarts.stopping",
    "get_space": "rdarts.spaces",
    "run_search": "rdarts.search",
    "top_eigenvalues": "rdarts.hessian",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
