"""dfa — direct feedback alignment (Nøkland 2016, NeurIPS 29, "Direct feedback alignment provides
learning in deep neural networks").

The output error goes straight to every hidden layer through a fixed random matrix B_l, in place of
the chain W_{l+1}ᵀ ⋯ W_Lᵀ of bp (layers l = 1..L, L the output layer):

    δ_L = e,   δ_l = (e B_l) ⊙ f'(a_l)  (l < L),   ∇W_l = δ_l h_{l-1}ᵀ,   ∇b_l = Σ_batch δ_l

with e = (softmax(a_L) − onehot(y)) / n (``output_error``: the mean loss's 1/n is in e). B_l is
K × d_l (K classes, d_l = size of a_l per example; for a conv layer its whole C·H·W output, so
e B_l is reshaped back to C×H×W, the shape of a_l before any max-pool: the projection skips the pool);
with one hidden layer, B_1 = W_2 is bp.

B_l ~ s · U(−√(6 / (K + d_l)), √(6 / (K + d_l))): Glorot-uniform of B_l's own shape (as BioTorch's
DFA layers draw theirs), s = ``feedback_scale``. It is drawn once, layer by layer, from a generator
seeded by one draw from the trial's generator at setup, at the first forward pass (a conv layer's
d_l depends on the input size, which the network does not record).

On convolutions this is Nøkland's dense projection, not BioTorch's convolutional DFA (``biotorch/layers/dfa``),
which sends e, repeated over positions, through a K × C_in × k × k kernel to the layer's *input* and lets
autograd carry it through the pool and activation below: a different feedback structure, so BioTorch's
CNN numbers for DFA are a reference point for ours, not a replication.

``hidden_error`` is what B_l projects (here e); drtp (``algorithms/drtp.py``) projects the target.
"""

import math

import torch

from harness.algorithm import Algorithm, Capabilities, Plausibility, StepOutput, output_error, set_grad
from harness.hparams import HParams, hp, loguniform
from harness.registry import register_algorithm


@register_algorithm
class DirectFeedbackAlignment(Algorithm):
    name = "dfa"
    version = 1
    description = "direct feedback alignment: the output error sent to every hidden layer through fixed random matrices"
    reference = "Nøkland 2016, NeurIPS 29 (Direct feedback alignment provides learning in deep neural networks)"
    capabilities = Capabilities(layers=frozenset({"linear", "conv", "maxpool"}))

    class Params(HParams):
        feedback_scale: float = hp(1.0, "scale of B_l relative to Glorot-uniform of its (classes × layer size) shape",
                                   gt=0, le=100, search=loguniform(0.1, 10))

    def plausibility(self):
        return Plausibility(weight_transport=False, local=True, phases="single", feedback_learning=False,
                            notes="fixed random B_l send the output error directly to every hidden layer")

    def setup(self):
        self.seed = int(torch.randint(0, 2**62, (1,), generator=self.gen, device=self.gen.device).item())
        self.B: list[torch.Tensor] = []  # drawn at the first forward pass (see feedback)

    def feedback(self, fw) -> list[torch.Tensor]:
        """B_l (K × d_l) of every hidden layer, drawn from ``self.seed`` on first use: a function of the
        seed and the layer sizes only, so drawing them changes no other state."""
        if not self.B:
            gen = torch.Generator(device=self.device).manual_seed(self.seed)
            k = fw.logits.shape[1]
            for a in fw.a[:-1]:
                d = a[0].numel()
                bound = self.hp.feedback_scale * math.sqrt(6.0 / (k + d))
                self.B.append((torch.rand(k, d, generator=gen, device=a.device, dtype=a.dtype) * 2 - 1) * bound)
        return self.B

    def hidden_error(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The n × K signal that B_l projects to the hidden layers: the output error e."""
        return e

    def deltas(self, fw, e: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """δ_l of every layer: (s B_l) ⊙ f'(a_l) for the hidden ones (s = ``hidden_error``), e for the output."""
        layers, B = self.net.layers, self.feedback(fw)
        s = self.hidden_error(e, y)
        out = [layers[l].act.backward((s @ B[l]).view_as(fw.a[l]), fw.a[l], fw.z[l]) for l in range(len(B))]
        return out + [e]

    @torch.no_grad()
    def compute_update(self, x, y):
        with self.phase("forward"):
            fw = self.net.forward_all(x)
            loss, e = output_error(fw.logits, y)
        self.feedback(fw)  # first call only: drawing B is not an update's work
        with self.phase("credit"):
            for layer, h, delta in zip(self.net.layers, fw.h, self.deltas(fw, e, y), strict=True):
                _, gw, gb = layer.backward(delta, h, None)
                set_grad(layer.weight, gw)
                set_grad(layer.bias, gb)
        return StepOutput(loss, fw.logits)

    def extra_state(self):
        return {"seed": self.seed, "B": [b.clone() for b in self.B]}

    def load_extra_state(self, state):
        self.seed = int(state["seed"])
        self.B = [b.to(self.device) for b in state["B"]]
