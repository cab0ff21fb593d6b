"""rdarts: RobustDARTS (Zela et al., ICLR 2020) in modern PyTorch, run as hyperparameter sweeps on Ray Tune.

The engine (spaces, ops, supernet, search, Hessian, stopping rule, retraining network, data) is pure PyTorch and
imports neither Ray nor MLflow; ``rdarts.sweep`` and the reducer are thin layers over it.
"""

from rdarts.config import ConfigError, SearchConfig
from rdarts.errors import UserError
from rdarts.hessian import dense_hessian, dominant_eigenvalue, top_eigenvalues
from rdarts.search import DivergedError, EpochRecord, Search, SearchResult, run_search
from rdarts.spaces import PRIMITIVES, Genotype, SearchSpace, derive_genotype, get_space
from rdarts.stopping import PAPER, REFERENCE_CODE, ESRule, es_stop_epoch
from rdarts.supernet import Supernet

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DivergedError",
    "ESRule",
    "EpochRecord",
    "Genotype",
    "PAPER",
    "PRIMITIVES",
    "REFERENCE_CODE",
    "Search",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "Supernet",
    "UserError",
    "dense_hessian",
    "derive_genotype",
    "dominant_eigenvalue",
    "es_stop_epoch",
    "get_space",
    "run_search",
    "top_eigenvalues",
]
