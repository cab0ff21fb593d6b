"""The test errors Zela et al. (ICLR 2020) report, as data: what the methods table puts beside a sweep's numbers.

From the reference digest (``shared/reference/robustdarts.md`` section 5). None of these were read off the paper's
PDF, so each carries its source:

- ``SECOND_HAND_TABLE``: DARTS / DARTS-ES / DARTS-ADA on S1-S4, mean ± std over 3 searches, each architecture
  retrained (second order). Quoted from ROME's Table 1, whose columns marked "results obtained from R-DARTS" match
  the R-DARTS table.
- ``UNVERIFIED_RECALL``: R-DARTS(DP) and R-DARTS(L2) on S1-S4, one architecture each (recalled from R-DARTS Table 3 /
  SDARTS Table 4, not checked against the PDF).
- ``SECOND_HAND_DARTS_SPACE``: R-DARTS(L2) on the DARTS space (DARTS-PT Table 2, NASI and ROME), and DARTS on
  CIFAR-100 as ROME cites it from R-DARTS.

- ``PC_DARTS_README``: PC-DARTS on the DARTS space, CIFAR-10 (its README's "Results on CIFAR10" table; first order).

The robust-DARTS methods' numbers on S1-S4 (SDARTS Table 4, β-DARTS, DARTS- tables) are not here: their repositories'
READMEs do not list them and the papers were not read, so none could be checked.

Keys are (dataset, space, method) with rdarts' names (``cifar10``, ``s1``, ``DARTS-ES``); every number is a test
error in %. Each number belongs to the order its searches used (Zela et al.'s are second order), and only rows of
that order get it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdarts.methods import DARTS, DARTS_ADA, DARTS_ES, RDARTS_DP, RDARTS_L2, ROBUST_LABELS

SECOND_HAND_TABLE = "ROME Table 1 (results obtained from R-DARTS), second-hand"
UNVERIFIED_RECALL = "recalled from R-DARTS Table 3 / SDARTS Table 4, unverified"
SECOND_HAND_DARTS_SPACE = "DARTS-PT Table 2, NASI and ROME tables, second-hand"
PC_DARTS_README = "PC-DARTS README (yuhuixu1993/PC-DARTS@b74702f), Results on CIFAR10"


@dataclass(frozen=True)
class PaperNumber:
    mean: float
    std: float | None
    """None where the paper reports one architecture (R-DARTS) rather than mean ± std over searches."""
    source: str
    order: str = "second"
    """The order of the α step the number was searched with."""


def _table() -> dict[tuple[str, str, str], PaperNumber]:
    # dataset, space: (DARTS, DARTS-ES, DARTS-ADA) as (mean, std)
    es_ada = {
        ("cifar10", "s1"): ((4.66, 0.71), (3.05, 0.07), (3.03, 0.08)),
        ("cifar10", "s2"): ((4.42, 0.40), (3.41, 0.14), (3.59, 0.31)),
        ("cifar10", "s3"): ((4.12, 0.85), (3.71, 1.14), (2.99, 0.34)),
        ("cifar10", "s4"): ((6.95, 0.18), (4.17, 0.21), (3.89, 0.67)),
        ("cifar100", "s1"): ((29.93, 0.41), (28.90, 0.81), (24.94, 0.81)),
        ("cifar100", "s2"): ((28.75, 0.92), (24.68, 1.43), (26.88, 1.11)),
        ("cifar100", "s3"): ((29.01, 0.24), (26.99, 1.79), (24.55, 0.63)),
        ("cifar100", "s4"): ((24.77, 1.51), (23.90, 2.01), (23.66, 0.90)),
        ("svhn", "s1"): ((9.88, 5.50), (2.80, 0.09), (2.59, 0.07)),
        ("svhn", "s2"): ((3.69, 0.12), (2.68, 0.18), (2.79, 0.22)),
        ("svhn", "s3"): ((4.00, 1.01), (2.78, 0.29), (2.58, 0.07)),
        ("svhn", "s4"): ((2.90, 0.02), (2.55, 0.15), (2.52, 0.06)),
    }
    # dataset, space: (R-DARTS(DP), R-DARTS(L2))
    rdarts = {
        ("cifar10", "s1"): (3.11, 2.78), ("cifar10", "s2"): (3.48, 3.31),
        ("cifar10", "s3"): (2.93, 2.51), ("cifar10", "s4"): (3.58, 3.56),
        ("cifar100", "s1"): (25.93, 24.25), ("cifar100", "s2"): (22.30, 22.24),
        ("cifar100", "s3"): (22.36, 23.99), ("cifar100", "s4"): (22.18, 21.94),
        ("svhn", "s1"): (2.55, 4.79), ("svhn", "s2"): (2.52, 2.51),
        ("svhn", "s3"): (2.49, 2.48), ("svhn", "s4"): (2.61, 2.50),
    }
    out: dict[tuple[str, str, str], PaperNumber] = {}
    for (dataset, space), cols in es_ada.items():
        for method, (mean, std) in zip((DARTS, DARTS_ES, DARTS_ADA), cols, strict=True):
            out[(dataset, space, method)] = PaperNumber(mean, std, SECOND_HAND_TABLE)
    for (dataset, space), (dp, l2) in rdarts.items():
        out[(dataset, space, RDARTS_DP)] = PaperNumber(dp, None, UNVERIFIED_RECALL)
        out[(dataset, space, RDARTS_L2)] = PaperNumber(l2, None, UNVERIFIED_RECALL)
    out[("cifar10", "darts", RDARTS_L2)] = PaperNumber(2.95, 0.21, SECOND_HAND_DARTS_SPACE)
    out[("cifar100", "darts", RDARTS_L2)] = PaperNumber(18.01, 0.26, SECOND_HAND_DARTS_SPACE)
    out[("cifar100", "darts", DARTS)] = PaperNumber(20.58, 0.44, "ROME, citing R-DARTS, second-hand")
    out[("cifar10", "darts", ROBUST_LABELS["pc-darts"])] = PaperNumber(2.57, None, PC_DARTS_README, order="first")
    return out


PAPER_TEST_ERRORS: dict[tuple[str, str, str], PaperNumber] = _table()


def paper_number(dataset: str, space: str, method: str, order: str) -> PaperNumber | None:
    """The paper's test error for a methods-table row, or None where the paper has none (or the order differs)."""
    number = PAPER_TEST_ERRORS.get((dataset.lower(), space.lower(), method))
    return number if number is not None and number.order == order else None
