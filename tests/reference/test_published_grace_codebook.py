"""GRACE's codebook bookkeeping against EasyEdit's `GRACEAdapter` (models/grace/GRACE.py in the
paper's code), written out below from its source: keys appended, labels *prepended*
(`[self.edit_label] + self.key_labels`), labels compared by their float32 means, radii split,
expanded or left. Over sequences of edits whose keys fall near each other, the same actions, the
same trained slot and the same codebook."""

import random

import pytest
import torch

from pytest_wild.editors.memory.codebook import Codebook
from pytest_wild.editors.memory.grace import GraceHparams, update_codebook


class PublishedCodebook:
    """The key-update branch of EasyEdit's GRACEAdapter.forward at iteration 0, for one query."""

    def __init__(self, eps: float, eps_expand: str) -> None:
        self.init_epsilon, self.eps_expand = eps, eps_expand
        self.keys = None

    def label_match(self, edit_label, key_label):
        return edit_label.float().mean() == key_label.float().mean()

    def add_key(self, new_key):
        keys = torch.vstack([self.keys, new_key.detach()])
        new_epsilon = torch.tensor(self.init_epsilon).view(1)
        epsilons = torch.vstack([self.epsilons, new_epsilon])
        key_labels = [self.edit_label] + self.key_labels
        return keys, epsilons, key_labels

    def edit(self, query, edit_label) -> int:
        """Returns the key the edit's value training updates (the query's nearest key after)."""
        self.edit_label = edit_label
        if self.keys is None:
            self.keys = query.detach()
            self.epsilons = torch.tensor(self.init_epsilon).view(1)
            self.key_labels = [edit_label]
        else:
            dists = torch.cdist(self.keys, query, p=2).view(-1, len(query))
            smallest_distance, nearest_key = dists.min(0)
            if smallest_distance > (self.init_epsilon + self.epsilons[nearest_key]):
                self.keys, self.epsilons, self.key_labels = self.add_key(query)
            elif not self.label_match(self.edit_label, self.key_labels[nearest_key]):
                self.keys, self.epsilons, self.key_labels = self.add_key(query)
                self.epsilons[nearest_key] = (smallest_distance / 2) - 1e-5
                self.epsilons[-1] = smallest_distance / 2
            elif smallest_distance > self.epsilons[nearest_key]:
                if self.eps_expand == "coverage":
                    self.epsilons[nearest_key] = smallest_distance
                else:
                    self.keys[nearest_key] = 0.5 * self.keys[nearest_key] + 0.5 * query
                    self.epsilons[nearest_key] = smallest_distance
        return int(torch.cdist(self.keys, query, p=2).view(-1).argmin())


@pytest.mark.parametrize("eps_expand", ["coverage", "moving_average"])
@pytest.mark.parametrize("seed", range(4))
def test_the_codebook_keeps_its_labels_and_radii_as_easyedit_does(seed, eps_expand):
    rng = random.Random(seed)
    hp = GraceHparams(layers=[0], rewrite_module_tmp="m", eps=1.0, eps_expand=eps_expand)
    ours, published = Codebook(), PublishedCodebook(1.0, eps_expand)
    actions = set()
    # three label sequences (the same target and prompt length give the same mean) and keys
    # on a short line, so edits insert, split, expand and fall inside a radius
    labels = [torch.tensor([[-100, -100, 7, 9]]), torch.tensor([[-100, 11, 3]]), torch.tensor([[-100, -100, -100, 40]])]
    for _ in range(40):
        key = torch.tensor([[rng.uniform(0.0, 12.0), rng.choice([0.0, 0.5])]])
        label = rng.choice(labels)
        action, slot = update_codebook(ours, key[0], torch.zeros(2), label.float().mean(), hp)
        actions.add(action)
        assert slot == published.edit(key, label)
        assert torch.equal(ours.keys, published.keys)
        assert torch.allclose(ours.radii, published.epsilons.view(-1))
        assert ours.labels.tolist() == [lab.float().mean().item() for lab in published.key_labels]
    assert actions == {"insert", "split", "expand", "covered"}
