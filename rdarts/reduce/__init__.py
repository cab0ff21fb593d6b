"""The reducer: from a sweep folder to the selected, retrained genotype, with an MLflow record.

``collect`` (the table), ``select`` (the R-DARTS rule, pure), ``reduce_experiment`` (everything, as
``rdarts reduce PATH``). Ray and MLflow are imported only when retraining or logging. The names below are loaded
on first use: the main CLI imports ``rdarts.reduce.cli`` to build its parser, and ``rdarts sweep validate`` must
not load torch through this package (the pipeline imports the retraining engine).
"""

from __future__ import annotations

from rdarts.lazy_exports import lazy_exports

# Imported here, not lazily: ``collect`` and ``select`` are also the names of their modules, and importing a
# submodule binds its name on the package, which would shadow a lazily exported function of the same name.
from rdarts.reduce.collect import collect
from rdarts.reduce.select import Selection, select

_EXPORTS = {
    "ReduceOutcome": "rdarts.reduce.pipeline",
    "reduce_experiment": "rdarts.reduce.pipeline",
    "reduce_sweep": "rdarts.reduce.pipeline",
}

__all__ = ["ReduceOutcome", "Selection", "collect", "reduce_experiment", "reduce_sweep", "select"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
