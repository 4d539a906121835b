"""Interp: the classic interpretability toolkit on the one model's hook points.

Activation and attribution patching and causal tracing share one generic core (patching.py);
logit and tuned lenses are in lens.py, probes in probes.py, attention patterns and head
detectors in attention.py. task_pairs.py reads the pairs of a built-in task or a pairs file
into one `tasks.TaskBatch` (A rows clean, B rows corrupted, aligned token by token by
`tasks.align_prompts`, which patching and tracing both go through); every result is rendered
as PNG, HTML and JSON by figures.py, and every file a command writes goes through outputs.py
(all of a command's files together, or none). The commands: commands.py (patch, trace),
lens_commands.py (lens, tuned-lens), attention_commands.py (attention, heads, probe). Imports
`sparsecircuits.loading`, `model`, `tasks`, `data` and the leaf modules only
(`memory` checks each analysis's sizes before it allocates).
"""
