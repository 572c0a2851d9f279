"""wm — weight mirrors (Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, NeurIPS, "Deep learning without
weight transport", §4 "weight mirrors", eq. 7 with weight decay).

As fa (``algorithms/fa.py``): the error crosses B_l (stored with W_l's shape, so B_l = W_l is bp),

    δ_L = e,   δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ,

and B_l is learned in a *mirror phase*, in which each layer l ≥ 2 is driven by its own white noise
(drawn independently per layer, so that it stays white: the noise is not propagated up the network):

    ξ ~ N(0, σ² I)  (n samples of the layer's input shape),   y = W_l ξ   (no bias; conv: the convolution)
    ΔB_l = η_B y ξᵀ / (nP) − η_B λ B_l

P = 1 for linear layers and the number of output positions for convolutions, where y ξᵀ is the weight
correlation Σ_{samples, positions} (that of ``Layer.backward(y, ξ, None)``, bias excluded). Since
E[y ξᵀ] / n = σ² W_l, the rule's fixed point is

    B_l* = σ² W_l / λ    (∝ W_l: the feedback tends to W_lᵀ up to scale)

reached at the rate η_B λ per mirror step, with stationary noise that falls with n (``mirror_batch``).
For convolutions a kernel tap that meets the zero padding at some positions correlates over fewer
positions: B* = σ² (W_l ⊙ c) / λ, c ≤ 1 the fraction of positions where the tap lies inside the input
(c = 1 for taps that never meet the padding).

Implementation: unit noise z ~ N(0, I) is drawn from ``self.gen`` (ξ = σz), and σ² goes into the step's
coefficient, B_l ← (1 − η_B λ) B_l + (η_B σ² / (nP)) (W_l z) zᵀ: the same rule, without scaling the noise.
The rule depends on η_B σ² and η_B λ only, so σ is not searched (fix it, search η_B and λ: the scale
σ²/λ and the rate η_B λ of the fixed point).

Schedule: ``step()`` runs ``mirror_steps`` mirror steps (fresh noise each, layer by layer) under the
``feedback`` phase *before* the credit pass, so the update uses B mirrored from the current W (as the
released code mirrors after every forward update, before the next credit pass). B_0 is fa's seeded draw
(independent of W: no weight transport). FLOPs per mirror step per layer: two products (W z and the
correlation, 2·n·P·|W| each) and the step (2·|W|).

Hyperparameters. The released Python code (Deep-Learning-without-Weight-Transport,
``fcnn/FCNN_WM.py``) mirrors one noise batch of the training batch size (128) per update with
η_B = 0.01 and noise amplitude 0.1, with no decay term (its B grows without bound); here λ bounds B.
The defaults set σ²/λ = 1 (B* = W, bp's scale) and η_B λ = 0.05 (B follows W within ~20 updates);
the ranges let σ²/λ span 0.1–10 (as fa's ``feedback_scale``) and keep η_B λ ≤ 1 (stable).
"""

import math

import torch
import torch.nn.functional as F

from harness.algorithm import Capabilities
from harness.hparams import choice, hp, loguniform, randint
from harness.registry import register_algorithm

from algorithms.fa import FeedbackAlignment
from algorithms.kp import LearnedFeedback


def affine(layer, z: torch.Tensor) -> torch.Tensor:
    """W z without the bias: the layer's linear map or convolution."""
    w = layer.weight.detach()
    if layer.kind == "conv":
        return F.conv2d(z, w, None, layer.stride, layer.padding)
    return z @ w.t()


def correlation(layer, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Σ y zᵀ over samples (and positions): ``Layer.backward``'s weight gradient, without the bias's."""
    if layer.kind == "conv":
        w = layer.weight
        return torch.ops.aten.convolution_backward(y, z, w, None, [layer.stride] * 2, [layer.padding] * 2, [1, 1],
                                                   False, [0, 0], 1, [False, True, False])[1]
    return y.t() @ z


@register_algorithm
class WeightMirror(LearnedFeedback):
    name = "wm"
    version = 1
    description = "weight mirrors: B_l learns σ²W_l/λ from each layer's own white noise, in a mirror phase"
    reference = "Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, NeurIPS (weight mirrors, eq. 7)"
    capabilities = Capabilities(layers=frozenset({"linear", "conv", "maxpool"}))
    phases = "two"
    plausibility_notes = ("mirror phase: each layer driven by its own noise ξ, B_l learns y ξᵀ with decay "
                          "(→ σ²W_l/λ) without reading W")

    class Params(FeedbackAlignment.Params):
        mirror_lr: float = hp(0.05, "η_B: step of the mirror rule ΔB = η_B (yξᵀ/(nP) − λB)", gt=0, le=10,
                              search=loguniform(1e-3, 0.1))
        mirror_decay: float = hp(1.0, "λ: decay of B in the mirror rule; fixed point B* = σ²W/λ", gt=0, le=100,
                                 search=loguniform(0.1, 10.0))
        mirror_noise: float = hp(1.0, "σ: standard deviation of the mirror noise ξ (not searched: the rule "
                                 "depends on η_Bσ² and η_Bλ only)", gt=0, le=100)
        mirror_steps: int = hp(1, "mirror steps (fresh noise batches) per training update", ge=1, le=1000,
                               search=randint(1, 4))
        mirror_batch: int = hp(128, "n: noise samples per mirror step", ge=1, le=65536,
                               search=choice(32, 64, 128, 256))

    @torch.no_grad()
    def mirror(self, shapes: list[tuple[int, ...]]) -> None:
        """``mirror_steps`` mirror steps of every B_l (l ≥ 2; ``shapes`` from ``Network.input_shapes``)."""
        hp_, layers = self.hp, self.net.layers
        n, eta, lam = hp_.mirror_batch, hp_.mirror_lr, hp_.mirror_decay
        for _ in range(hp_.mirror_steps):
            for l in range(1, len(layers)):
                layer = layers[l]
                w = layer.weight
                z = torch.randn((n, *shapes[l]), generator=self.gen, device=w.device, dtype=w.dtype)
                y = affine(layer, z)
                positions = math.prod(y.shape[2:])  # output positions of a convolution; 1 for a linear layer
                coef = eta * hp_.mirror_noise ** 2 / (n * positions)
                self.decayed_step(l, correlation(layer, y, z), eta, lam, coef)

    @torch.no_grad()
    def step(self, x, y):
        with self.phase("feedback"):
            self.mirror(self.net.input_shapes(x.shape[1:]))
        return self.compute_update(x, y)
