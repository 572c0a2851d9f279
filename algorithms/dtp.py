"""dtp — difference target propagation (Lee, Zhang, Fischer & Bengio 2015, ECML-PKDD; variants of
Bartunov, Santoro, Richards, Marris, Hinton & Lillicrap 2018, NeurIPS).

As tp (see ``algorithms/tp.py`` for the notation, the learned inverses g_l(h_l) = f_{l-1}(V_l h_l + c_l),
their noisy-reconstruction training, the local losses and the schedules), but every target below the
penultimate layer carries the *difference correction*, which cancels the inverse's reconstruction error:

    h_{l-1}* = h_{l-1} + g_l(h_l*) − g_l(h_l)

(with a perfect inverse, g_l(h_l) = h_{l-1} and this is tp; with an imperfect one, h_{l-1}* = h_{l-1}
when h_l* = h_l, so targets move only as far as the output target does). The last hidden layer's target
is chosen by ``penultimate``:

    gradient (Lee et al.)            h_{L-1}* = h_{L-1} − β ∂ℓ/∂h_{L-1} = h_{L-1} − β W_Lᵀ ∂ℓ/∂h_L
    inverse  (simplified DTP,        h_{L-1}* = h_{L-1} + g_L(h_L*) − g_L(h_L)
              Bartunov et al.)

``gradient`` uses the top layer's weights W_L (weight transport for that one layer only, as in Lee et
al.); with it the top two layers' updates equal bp's gradients (bit for bit: the displacement is taken
as W_Lᵀ e directly) and the top layer needs no inverse. ``inverse`` needs no weight transport at all:
the top inverse maps the logits back into the last hidden layer (see tp's docstring for its form).

With exact inverses (``inverse=exact``), ``penultimate=inverse`` gives the Gauss–Newton target
h_{L-1}* − h_{L-1} = W_L⁺(h_L* − h_L) at every β, and the targets further down tend to the layer-wise
Gauss–Newton targets as β → 0 (Meulemans et al. 2020, NeurIPS).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from harness.hparams import choice, hp, loguniform
from harness.registry import register_algorithm

from algorithms.tp import TargetProp


@register_algorithm
class DifferenceTargetProp(TargetProp):
    name = "dtp"
    version = 3  # v2: exact inverses' pseudoinverse FLOP-counted; v3: the gradient penultimate target no longer
    # computes (and counts) an unused weight gradient of the top layer
    description = "difference target propagation: tp with the difference correction g(h*) − g(h)"
    reference = "Lee et al. 2015, ECML-PKDD (LNCS 9284:498); Bartunov et al. 2018, NeurIPS"

    difference = True

    class Params(TargetProp.Params):
        beta: float = hp(0.5, "output target step: h_L* = h_L − β ∂ℓ/∂h_L (per-example loss)", gt=0, le=1000,
                         search=loguniform(0.01, 10.0))
        penultimate: Literal["gradient", "inverse"] = hp(
            "gradient", "last hidden layer's target: gradient step −β W_Lᵀ ∂ℓ/∂h_L (Lee et al.) or through the "
                        "top inverse with the difference correction (simplified DTP)",
            search=choice("gradient", "inverse"))

    def penultimate_rule(self) -> str:
        return self.hp.penultimate

    def plausibility(self):
        base = super().plausibility()
        if self.penultimate_rule() == "gradient":  # Lee et al.: the top layer's W_Lᵀ carries the penultimate target
            return replace(base, weight_transport=True, transport="values",
                           notes=base.notes + "; penultimate target through W_Lᵀ")
        return base

    def inverse_layers(self):
        top = len(self.net.layers) - 1
        return [i for i in super().inverse_layers() if i != top or self.penultimate_rule() == "inverse"]

    def penultimate(self, fw, out, t_top, e):
        if self.penultimate_rule() == "inverse":
            return super().penultimate(fw, out, t_top, e)
        d = e @ self.net.layers[-1].weight  # (h − h*)/(βn) = W_Lᵀ e
        return fw.h[-1] - (self.hp.beta * len(e)) * d, d
