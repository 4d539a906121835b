"""Tasks: the paper's 20 binary next-token tasks on Python code (and one harder variant), and
the task loss.

Owns the task suite (templates_context.py: the ordinary code around each task; templates.py: one
pair generator per task; suite.py: the registry and deterministic train, validation and test
splits; controls.py: control tasks with no meaning in Python), task pairs and their encoding
into a batch of prompts with answer tokens (pairs.py), the task loss and accuracy of spec
section 4 (metrics.py), and the `sparsecircuits tasks` commands (commands.py).
Imports `sparsecircuits.data`, `sparsecircuits.model`, `sparsecircuits.loading` and the leaf
modules `errors`, `files` and `validation` only; circuits and later stages get their task data
from here.
"""

from sparsecircuits.tasks.alignment import PairAlignment, align_prompts
from sparsecircuits.tasks.metrics import (
    answer_margins,
    candidate_logits,
    evaluate_pairs,
    evaluate_task,
    logit_margins,
    margin_loss,
    task_accuracy,
    task_losses,
)
from sparsecircuits.tasks.pairs import (
    SKIP_REASONS,
    EncodedTask,
    TaskBatch,
    TaskPair,
    encode_pairs,
    read_pairs_jsonl,
    write_pairs_jsonl,
)
from sparsecircuits.tasks.suite import (
    CONTROL_TASKS,
    PAPER_TASKS,
    SPLITS,
    TASKS,
    Task,
    get_task,
    task_pairs,
)

__all__ = [
    "SKIP_REASONS",
    "CONTROL_TASKS",
    "PAPER_TASKS",
    "SPLITS",
    "TASKS",
    "EncodedTask",
    "PairAlignment",
    "Task",
    "TaskBatch",
    "TaskPair",
    "align_prompts",
    "answer_margins",
    "candidate_logits",
    "encode_pairs",
    "evaluate_pairs",
    "evaluate_task",
    "get_task",
    "logit_margins",
    "margin_loss",
    "read_pairs_jsonl",
    "task_accuracy",
    "task_losses",
    "task_pairs",
    "write_pairs_jsonl",
]
