"""The adversarial objectives the trainer offers, by name, and the R1 penalty (from ``ganfast.losses``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# TEMPORARY until branch issue5 (ganfast.losses) is merged: these lines become a table over its functions.


def _ns_g(fake_logits):
    return F.softplus(-fake_logits).mean()


def _ns_d(real_logits, fake_logits):
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def _hinge_g(fake_logits):
    return -fake_logits.mean()


def _hinge_d(real_logits, fake_logits):
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def r1_penalty(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


LOSSES = {"ns": (_ns_g, _ns_d), "hinge": (_hinge_g, _hinge_d)}
