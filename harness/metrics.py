"""Metrics computed off the training path: the angle between an algorithm's update and bp's gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def angle_degrees(u: torch.Tensor, v: torch.Tensor) -> float:
    """Angle between two tensors viewed as vectors, in degrees (stable near 0 and 180)."""
    u, v = u.flatten().double(), v.flatten().double()
    nu, nv = u.norm(), v.norm()
    if nu == 0 or nv == 0:
        return float("nan")
    u, v = u / nu, v / nv
    return math.degrees(2 * math.atan2((u - v).norm().item(), (u + v).norm().item()))


def bp_gradients(net, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Backprop gradients of the mean cross-entropy w.r.t. every layer's weight (a diagnostic)."""
    with torch.enable_grad():
        loss = F.cross_entropy(net(x), y)
        return list(torch.autograd.grad(loss, net.weights()))


def alignment_angles(algo, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per layer, the angle between the algorithm's weight update and the bp gradient on (x, y)."""
    reference = bp_gradients(algo.net, x, y)
    algo.compute_update(x, y)
    return [angle_degrees(w.grad, g) for w, g in zip(algo.net.weights(), reference, strict=True)]
