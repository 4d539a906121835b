"""Circuits over SAE latents: node groups whose nodes are latents, an error node that keeps or
replaces a whole vector, and the links through an SAE's weights. Fixtures are hand-set."""

import torch

from sparsecircuits.circuits.masks import blend_hook
from sparsecircuits.circuits.nodes import NodeGroup, mean_activations


def test_a_one_node_group_of_a_wider_hook_keeps_or_replaces_the_whole_vector():
    group = NodeGroup(0, "mlp_sae_error", "blocks.0.mlp.hook_post.hook_sae_error", 1, channels=4)
    x = torch.arange(24.0).view(2, 3, 4)
    mean = mean_activations([{group.hook: x}], [group])[group.hook]
    assert torch.equal(mean, x.flatten(0, 1).mean(dim=0))  # one mean per channel
    kept = blend_hook(group, torch.ones(1), mean)(x, None)
    replaced = blend_hook(group, torch.zeros(1), mean)(x, None)
    assert torch.equal(kept, x) and torch.equal(replaced, mean.expand_as(x))
