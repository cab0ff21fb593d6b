"""Figures of a search: the eigenvalue curve (``eigenvalues``) and the cell diagram of a genotype (``cells``).

Both draw on a bare matplotlib ``Figure`` with the Agg canvas (never pyplot) and write their PNG atomically.
"""

from rdarts.plots.cells import plot_genotype
from rdarts.plots.eigenvalues import plot_eigenvalues

__all__ = ["plot_eigenvalues", "plot_genotype"]
