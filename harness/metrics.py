"""Metrics computed off the training path: the angle between an algorithm's update and bp's gradient,
and the Newton-like diagnostics any feedback rule can use (the contraction ρ of a layer target and
the damped Gauss–Newton direction). They take tensors, networks and callables, never an algorithm.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from harness.algorithm import output_error


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


def contraction(upper: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, dh: torch.Tensor,
                da: torch.Tensor) -> float:
    """ρ = ‖δa − J Δh‖ / ‖δa‖: how far the displacement ``dh`` of ``upper``'s input ``h`` falls short of
    moving its output by ``da`` to first order; J = ∂upper/∂h at ``h``, applied by a JVP (a
    Hildebrandt–Graves iteration with that approximate inverse converges when ρ < 1)."""
    with torch.no_grad(), warnings.catch_warnings():
        # torch's forward-AD decompositions still call the deprecated torch.jit.script on first use
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        _, jdh = torch.func.jvp(upper, (h,), (dh,))
        return ((da - jdh).norm() / da.norm()).item()


def layers_above(net, j: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """h_j (the input of layer j, 0-based) → the logits a_{L−1}, through layers j .. L−1 of ``net``."""
    top = net.layers[j:]

    def upper(h):
        for layer in top:
            h = layer.post(layer.pre(h))
        return h

    return upper


@torch.no_grad()
def gauss_newton_directions(net, x: torch.Tensor, y: torch.Tensor, *, damping: float, relative: bool,
                            carry: Callable) -> list[torch.Tensor]:
    """Weight directions of a damped Gauss–Newton step, layer by layer (0-based j, as ``net.layers``).

    For each hidden layer j ≥ 1 the displacement of its input h_j is the damped minimum-norm
    network-level target s_j = J_jᵀ(J_j J_jᵀ + λ_j I)⁺ e per example (J_j = ∂a_{L−1}/∂h_j, e = ∂L/∂a_{L−1}
    of the mean loss; λ_j = ``damping``, times the largest eigenvalue of J_j J_jᵀ if ``relative``),
    carried through layer j−1's nonlinearity by ``carry(j − 1, s_j, a_{j−1}, h_j)`` → g_{j−1}; the
    direction of W_{j−1} is g_{j−1}ᵀ h_{j−1} (the top layer's is eᵀ h_{L−1}). A pseudoinverse, not a
    solve: J_j J_jᵀ is singular when J_j has rank < k (narrow or saturated layers, no damping)."""
    layers = net.layers
    fw = net.forward_all(x)
    _, e = output_error(fw.logits, y)
    n, k = e.shape
    L = len(layers)
    grads: list[torch.Tensor] = [None] * L
    grads[L - 1] = e.t() @ fw.h[L - 1].flatten(1)
    jac = torch.eye(k, device=e.device, dtype=e.dtype).expand(n, k, k)  # ∂a_{L−1}/∂a_{L−1}
    for j in range(L - 1, 0, -1):
        jac = jac @ layers[j].weight  # ∂a_{L−1}/∂h_j: (n, k, d_in of layer j)
        gram = jac @ jac.transpose(1, 2)
        if relative:
            lam = damping * torch.linalg.eigvalsh(gram)[:, -1]
        else:
            lam = torch.full((n,), damping, device=e.device, dtype=e.dtype)
        gram = gram + lam[:, None, None] * torch.eye(k, device=e.device, dtype=e.dtype)
        s = (jac.transpose(1, 2) @ (torch.linalg.pinv(gram, hermitian=True) @ e.unsqueeze(2))).squeeze(2)
        g = carry(j - 1, s, fw.a[j - 1], fw.h[j])
        grads[j - 1] = g.t() @ fw.h[j - 1].flatten(1)
        jac = jac * layers[j - 1].act.deriv(fw.a[j - 1], fw.h[j]).unsqueeze(1)
    return grads
