"""Circuits: prune a trained model to the smallest set of nodes that still does a task.

Owns node definitions and mean activations (nodes.py), masks (masks.py), mask training,
discretisation and calibration (prune.py), trimming a found circuit node by node (trim.py),
the sweep and the sufficiency / necessity / random checks (pipeline.py), edges (edges.py),
circuit files (circuit_file.py), drawings (draw.py), the frontier plot (frontier.py) and prune
results stored in SQLite (store.py). Imports `model`, `train`, `tasks`, `data`, `errors` and
the leaf modules `files` (atomic writes), `validation` (circuit-file schema) and `render`
(escaping templates).
"""

from sparsecircuits.circuits.config import PruneConfig
from sparsecircuits.circuits.nodes import NodeGroup, load_or_compute_means, node_groups
from sparsecircuits.circuits.pipeline import PruneOutcome, prune_to_target_loss

__all__ = [
    "NodeGroup",
    "PruneConfig",
    "PruneOutcome",
    "load_or_compute_means",
    "node_groups",
    "prune_to_target_loss",
]
