"""fa — feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, Nat. Commun. 7:13276).

As bp, but the error travels down through a fixed random matrix B_l in place of W_lᵀ:

    δ_L = e,   δ_{l-1} = (B_l δ_l) ⊙ f'(a_{l-1}),   ∇W_l = δ_l h_{l-1}ᵀ

B_l is stored with W_l's shape (so the signal is ``δ_l @ B_l``, and ``B_l = W_l`` is bp);
it is drawn once, seeded, with W_l's initialisation scale. Convolutions use B_l as the
kernel of the transposed convolution; where layer l−1 max-pools, B_l δ_l reaches the position that
won each pooling window before the ⊙ f'(a_{l-1}) (``Layer.carry``, the route bp's gradient takes).

Diagnostic (per epoch): ``angle_b_w_l`` = ∠(B_l, W_l) of every layer l ≥ 2 (1-based), the angle
between the feedback and bp's W_l viewed as vectors (0° for bp; fa's stays near 90°, the rules that
learn their feedback should drive it down).
"""

import math

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, hp, loguniform
from harness.metrics import angle_degrees
from harness.registry import register_algorithm


class RandomFeedback:
    """Fixed random feedback B_l (W_l's shape) for every layer l ≥ 2, drawn once from ``feedback_scale`` ·
    Glorot-uniform with the algorithm's generator, checkpointed, and compared with W_l (not registered: the
    state of fa here and of pc-fa on predictive coding)."""

    def setup(self):
        self.B = [self.glorot_like(layer, self.hp.feedback_scale) for layer in self.net.layers[1:]]

    def glorot_like(self, layer, scale: float = 1.0) -> torch.Tensor:
        """A fresh draw with W's shape from scale · Glorot-uniform (seeded by ``self.gen``)."""
        w = layer.weight
        bound = scale * math.sqrt(6.0 / (layer.fan_in + layer.fan_out))
        return (torch.rand(w.shape, generator=self.gen, device=w.device, dtype=w.dtype) * 2 - 1) * bound

    def feedback(self, l: int) -> torch.Tensor:
        """The matrix (W_l's shape) that carries δ_l down to layer l−1 in place of W_l: B_l here; the
        rules of the same family (sign symmetry, Kolen–Pollack, weight mirror) override only this."""
        return self.B[l - 1]

    def feedback_angles(self) -> dict:
        """``angle_b_w_l<l>`` = ∠(B_l, W_l) for l ≥ 2 (1-based)."""
        layers = self.net.layers
        return {f"angle_b_w_l{l + 1}": angle_degrees(self.feedback(l), layers[l].weight) for l in range(1, len(layers))}

    def extra_state(self):
        return {"B": [b.clone() for b in self.B]}

    def load_extra_state(self, state):
        self.B = [b.to(self.device) for b in state["B"]]


@register_algorithm
class FeedbackAlignment(RandomFeedback, Algorithm):
    name = "fa"
    description = "feedback alignment: errors sent down through fixed random feedback matrices"
    reference = "Lillicrap et al. 2016, Nat. Commun. 7:13276"
    capabilities = Capabilities(layers=frozenset({"linear", "conv", "maxpool"}))
    report_labels = {"angle_b_w_l*": {"label": "angle of layer l's feedback B_l to W_l (bp's)", "unit": "degrees"}}

    class Params(HParams):
        feedback_scale: float = hp(1.0, "scale of B relative to Glorot-uniform of W's shape", gt=0, le=100,
                                   search=loguniform(0.1, 10))

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="single", feedback_learning=False,
                            notes="fixed random feedback B_l, drawn independently of W")

    @torch.no_grad()
    def compute_update(self, x, y):
        with self.phase("forward"):
            fw = self.net.forward_all(x)
            loss, delta = output_error(fw.logits, y)
        with self.phase("credit"):
            layers = self.net.layers
            for l in range(len(layers) - 1, -1, -1):
                feedback = self.feedback(l) if l > 0 else None
                signal, gw, gb = layers[l].backward(delta, fw.h[l], feedback)
                set_grad(layers[l].weight, gw)
                set_grad(layers[l].bias, gb)
                if l > 0:
                    below = layers[l - 1]
                    delta = below.carry(signal, fw.a[l - 1], fw.z[l - 1])
        return StepOutput(loss, fw.logits)

    def diagnostics(self, x, y):
        return self.feedback_angles()
