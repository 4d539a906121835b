"""Explain: automated explanations of units (neurons, channels, circuit nodes), simulated and
scored (spec: neuron-explainer.md; docs/explanations.md).

Reads top to bottom: units.py (what a unit is) -> records.py (activation records in one
streaming pass) -> rules.py and offline.py (the offline explainer and simulator), prose.py (how
the offline simulator reads prose; with vocabulary.py, wordclasses.py, cues.py, code_cues.py,
arithmetic.py, and semantic.py for kinds of word by meaning), prompts.py and llm.py (the
`openai` backend), baselines.py -> scoring.py and ablation.py (the scores) -> pipeline.py
(explain, simulate, score, store a set of units) -> revision.py, directions.py, puzzles.py,
circuit_nodes.py -> store.py (the SQLite database) and commands.py.
Imports `sparsecircuits.loading`, `sparsecircuits.model`, `sparsecircuits.data`,
`sparsecircuits.circuits` (circuit files) and the leaf modules only.
"""
