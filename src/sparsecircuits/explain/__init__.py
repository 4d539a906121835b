"""Explain: automated explanations of units (neurons, channels, circuit nodes), simulated and
scored (spec: neuron-explainer.md).

Owns unit addressing (units.py) and activation records gathered in one streaming pass
(records.py). Imports `sparsecircuits.loading`, `sparsecircuits.model`, `sparsecircuits.data`,
`sparsecircuits.circuits` (to explain a circuit's nodes) and the leaf modules only.
"""
