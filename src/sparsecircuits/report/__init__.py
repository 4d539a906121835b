"""Reports: HTML pages people read about a trained run.

Downstream of everything: imports `sparsecircuits.train` (to load runs) and the model, never
the other way round. Every string from a model or corpus is escaped by the templates.
"""

from sparsecircuits.report.run_report import DEFAULT_PROMPTS, completions, write_run_report

__all__ = ["DEFAULT_PROMPTS", "completions", "write_run_report"]
