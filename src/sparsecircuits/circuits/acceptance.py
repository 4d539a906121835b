"""Is a found circuit the model's, or pruning's own construction?

Learned pruning with its own calibration can reach a low task loss on rules the model never
learned (a learnable nonsense rule: tasks.controls): the masks pick whichever nodes happen to
correlate with the rule. Such a "circuit" is real as a sub-network but says nothing about how
the model does anything. Two tests, both on the test pairs, tell it apart:
- the unpruned model must already do the task below the target: a circuit is a claim about
  how the model does something, and there is nothing to explain where it does not;
- the circuit must agree with the model: on at least AGREEMENT_FLOOR of the test prompts its
  answer is the full model's answer (it predicts the model, not only the labels).
A circuit that passes both is accepted; the reason names the numbers either way.
"""

from __future__ import annotations

import torch

AGREEMENT_FLOOR = 0.9


def agreement(circuit_margin: torch.Tensor, full_margin: torch.Tensor) -> float:
    """Share of prompts where the circuit picks the same answer as the full model."""
    return float(((circuit_margin > 0) == (full_margin > 0)).float().mean())


def acceptance(full_model_loss: float, agreement_share: float, target_loss: float) -> dict:
    """{"accepted": bool, "reason": str} for a circuit measured on the test pairs."""
    model_does_it = full_model_loss <= target_loss
    agrees = agreement_share >= AGREEMENT_FLOOR
    said = (
        f"full model test loss {full_model_loss:.3f} "
        f"{'<=' if model_does_it else '>'} target {target_loss}; the circuit agrees with it "
        f"on {agreement_share:.0%} of test prompts (needed {AGREEMENT_FLOOR:.0%})"
    )
    if not model_does_it:
        reason = f"the model does not do this task ({said}): the circuit is pruning's own"
    elif not agrees:
        reason = f"the circuit does not do what the model does ({said})"
    else:
        reason = said
    return {"accepted": model_does_it and agrees, "reason": reason}
