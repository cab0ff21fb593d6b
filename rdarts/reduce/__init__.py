"""The reducer: from a sweep folder to the selected, retrained genotype, with an MLflow record.

``collect`` (the table), ``select`` (the R-DARTS rule, pure), ``reduce_experiment`` (everything, as
``rdarts reduce PATH``). Ray and MLflow are imported only when retraining or logging.
"""

from rdarts.reduce.collect import collect
from rdarts.reduce.pipeline import ReduceOutcome, reduce_experiment, reduce_sweep
from rdarts.reduce.select import Selection, select

__all__ = ["ReduceOutcome", "Selection", "collect", "reduce_experiment", "reduce_sweep", "select"]
