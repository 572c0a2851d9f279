"""kp — Kolen–Pollack feedback learning (Kolen & Pollack 1994, Proc. IEEE ICNN, "Backpropagation without
weight transport"; as a local circuit: Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, NeurIPS,
"Deep learning without weight transport", eqs. 16–17).

As fa (``algorithms/fa.py``): the error crosses B_l (stored with W_l's shape, so B_l = W_l is bp),

    δ_L = e,   δ_{l-1} = (B_lᵀ δ_l) ⊙ f'(a_{l-1}),   G_l = δ_l h_{l-1}ᵀ,

but B_l is learned: it receives the same update as W_l, from the same local signals (δ_l at one end,
h_{l-1} at the other), and both decay:

    ΔW_l = −η (G_l + λ W_l),        ΔB_l = −η_B (G_l + λ B_l)        (l ≥ 2; layer 1 has no B)

W's decay enters its pseudo-gradient (``.grad = G_l + λ W_l``, also for layer 1; biases do not decay),
which the shared optimizer applies; B_l is updated here by plain SGD, in ``step()`` after the credit
pass and with the G_l of that pass (computed with the B_l before its update). With ``optimizer=sgd``
and ``feedback_lr`` = ``lr`` (η_B = η), W_l and B_l receive identical updates, so

    W_l − B_l  ←  (1 − ηλ) (W_l − B_l)      every update,

and B_l → W_l (the feedback tends to W_lᵀ, bp's) at the rate ηλ, from any start; with λ = 0 the
difference stays W_0 − B_0 (and B_0 = W_0 is bp at every update). With momentum or Adam, W follows the
optimizer's step and B the raw G: the difference no longer contracts exactly, and B tracks W only as
far as the two steps agree. The training config's ``weight_decay`` (torch's coupled L2) acts on W
alone: leave it 0 and use ``decay``, which acts on both.

B_0 is fa's seeded draw (scale · Glorot-uniform of W's shape, independent of W: no weight transport).
Cost phases: fa's forward and credit passes; W's decay term in ``credit`` (with λ > 0); B's update in
``feedback`` (2 FLOPs per entry of every B_l).

Hyperparameters. Akrout et al.'s released code (Deep-Learning-without-Weight-Transport,
``fcnn/FCNN_KP.py``) updates B with W's own SGD learning rate (0.05 on MNIST, 0.3 on CIFAR-10, batch 128)
and a decay factor that defaults to none. The ranges here are ours (η_B 1e-3 … 1, λ 1e-5 … 1e-2); the
default λ = 1e-3 is chosen so that B − W, which decays by η_B·λ per update, shrinks within the 10³–10⁵
updates of a benchmark trial.
"""

import torch

from harness.algorithm import Plausibility
from harness.hparams import hp, loguniform
from harness.registry import register_algorithm

from algorithms.fa import FeedbackAlignment


class LearnedFeedback(FeedbackAlignment):
    """fa with B_l learned in ``step()`` (not registered: the base of kp and wm). B_l is replaced, never
    written in place, by ``decayed_step``; it is checkpointed by fa's ``extra_state`` (``{"B": [...]}``)."""

    phases = "single"
    plausibility_notes = ""

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases=self.phases, feedback_learning=True,
                            notes=self.plausibility_notes)

    def decayed_step(self, l: int, G: torch.Tensor, rate: float, decay: float, coef: float) -> None:
        """B_l ← (1 − rate·decay) B_l + coef · G, out of place (2 FLOPs per entry: the scaling and
        ``torch.add(·, G, alpha=coef)``, the kernel torch.optim.SGD applies its step with)."""
        self.B[l - 1] = torch.add(self.B[l - 1] * (1 - rate * decay), G, alpha=coef)


# The rule's two knobs, shared by kp and pc-kp. Declarations, run once at import (before a mutation run activates
# any mutant, like every class-body hp()): not mutated; docs/algorithms.md pins every declared knob.
# pragma: no mutate start
def feedback_lr_hp(update: str):
    """η_B, documented with the host's update of B (``update``)."""
    return hp(0.1, f"η_B: plain-SGD learning rate of B_l ({update}); with optimizer=sgd and lr = feedback_lr, "
                   "W and B get identical updates", gt=0, le=100, search=loguniform(1e-3, 1.0))


def decay_hp():
    return hp(1e-3, "λ: decay of both W_l (added to its pseudo-gradient) and B_l; W − B shrinks by (1 − ηλ) per "
                    "update under sgd at lr = feedback_lr", ge=0, le=10, search=loguniform(1e-5, 1e-2))
# pragma: no mutate end


class KolenPollackRule:
    """The Kolen–Pollack update, for any rule whose ``compute_update`` leaves G_l in W_l's ``.grad`` and whose
    feedback B is a list ``B[l − 1]`` of W_l's shape (kp here, pc-kp on predictive coding; not registered):
    W's decay in its pseudo-gradient, and B_l ← (1 − η_B λ) B_l − η_B G_l in ``step``."""

    def _decay_grads(self) -> None:
        """.grad of every W_l ← G_l + λ W_l (biases untouched); nothing to do at λ = 0."""
        lam = self.hp.decay
        if lam == 0:
            return
        with self.phase("credit"):
            for layer in self.net.layers:
                layer.weight.grad = torch.add(layer.weight.grad, layer.weight.detach(), alpha=lam)

    @torch.no_grad()
    def compute_update(self, x, y):
        out = super().compute_update(x, y)
        self._decay_grads()
        return out

    @torch.no_grad()
    def step(self, x, y):
        out = super().compute_update(x, y)  # the rule's own pass: .grad = G_l, computed with the current B_l
        eta, lam = self.hp.feedback_lr, self.hp.decay
        with self.phase("feedback"):
            for l in range(1, len(self.net.layers)):
                LearnedFeedback.decayed_step(self, l, self.net.layers[l].weight.grad, eta, lam, -eta)
        self._decay_grads()
        return out


@register_algorithm
class KolenPollack(KolenPollackRule, LearnedFeedback):
    name = "kp"
    version = 1
    description = "Kolen–Pollack: B_l gets W_l's update δ_l h_{l-1}ᵀ and both decay, so B_l → W_l"
    reference = ("Kolen & Pollack 1994, Proc. IEEE ICNN; Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, "
                 "NeurIPS (eqs. 16-17)")
    plausibility_notes = ("B_l learns from the local δ_l h_{l-1}ᵀ that W_l learns from; both decay, "
                          "so B_l − W_l → 0 without reading W")

    class Params(FeedbackAlignment.Params):
        feedback_lr: float = feedback_lr_hp("B_l ← B_l − η_B(δ_l h_{l-1}ᵀ + λB_l)")
        decay: float = decay_hp()
