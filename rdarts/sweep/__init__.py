"""The sweep service: many RobustDARTS searches as one Ray Tune experiment.

``spec`` (the sweep file) imports without Ray; ``scheduler``, ``trainable`` and ``runner`` import Ray and are loaded
only when a sweep runs. The CLI (``rdarts.sweep.cli``) imports Ray inside its handlers.
"""

from rdarts.sweep.spec import Problem, SweepError, SweepSpec, json_schema, load_sweep, spec_from_data

__all__ = ["Problem", "SweepError", "SweepSpec", "json_schema", "load_sweep", "spec_from_data"]
