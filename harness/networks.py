"""Networks: stacks of affine layers ``a_l = W_l h_{l-1} + b_l``, ``z_l = f(a_l)``, ``h_l = pool(z_l)``,
logits ``h_L = a_L``; ``pool`` is a non-overlapping max-pool on the convolutions that have one and the
identity elsewhere (``h_l = z_l``).

A network is named by a preset (``mlp-5x256-tanh``, ``cnn-small-tanh``) or any spec string
``mlp-<depth>x<width>-<activation>`` (e.g. ``mlp-2x64-relu``); the table of presets and the parsing
of spec strings live in ``harness.network_presets`` (plain data, no torch). Layers expose the pieces
algorithms need (``pre``: the affine map; ``backward``: the input and parameter gradients for a given
output signal and feedback weight) so that no algorithm re-derives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, UnknownNameError
from harness.network_presets import ACTIVATION_NAMES, CNNSpec, MLPSpec, resolve_spec


# --------------------------------------------------------------------------- activations
class Activation:
    """An elementwise nonlinearity with its derivative and (where it exists) inverse."""

    name = "?"
    invertible = False

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def deriv(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """f'(a), given a and h = f(a) (whichever is cheaper)."""
        raise NotImplementedError

    def backward(self, grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """grad ⊙ f'(a): a signal carried back through the nonlinearity."""
        return grad * self.deriv(a, h)

    def inverse(self, h: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"activation '{self.name}' is not invertible")

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        """Clip h into the open range of f so that ``inverse`` is finite."""
        return h


class Tanh(Activation):
    name, invertible = "tanh", True
    eps = 1e-6

    def __call__(self, a):
        return torch.tanh(a)

    def deriv(self, a, h):
        return 1 - h * h

    def backward(self, grad, a, h):
        return torch.ops.aten.tanh_backward(grad, h)  # the kernel autograd uses

    def inverse(self, h):
        return torch.atanh(self.clip(h))

    def clip(self, h):
        return h.clamp(-1 + self.eps, 1 - self.eps)


class LeakyReLU(Activation):
    name, invertible = "leaky-relu", True
    slope = 0.01

    def __call__(self, a):
        return F.leaky_relu(a, self.slope)

    def deriv(self, a, h):
        return torch.where(a > 0, torch.ones_like(a), self.slope)  # the slope in a's precision, not float32

    def inverse(self, h):
        return torch.where(h > 0, h, h / self.slope)


class ReLU(Activation):
    name, invertible = "relu", False

    def __call__(self, a):
        return torch.relu(a)

    def deriv(self, a, h):
        return (a > 0).to(a.dtype)


class Identity(Activation):
    name, invertible = "linear", True

    def __call__(self, a):
        return a

    def deriv(self, a, h):
        return torch.ones_like(a)

    def inverse(self, h):
        return h


ACTIVATIONS = {cls.name: cls for cls in (Tanh, LeakyReLU, ReLU, Identity)}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "harness.network_presets.ACTIVATION_NAMES must name these"


def activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UnknownNameError("activation", name, ACTIVATIONS) from None


# --------------------------------------------------------------------------- layers
class Layer(nn.Module):
    """One affine layer (linear or conv) followed by its activation and, on convolutions, an optional
    ``pool``×``pool`` max-pool with stride ``pool`` (``pool`` = 1: none)."""

    kind = "?"

    def __init__(self, act: Activation, pool: int = 1):
        super().__init__()
        self.act = act
        self.pool = pool

    def pre(self, h: torch.Tensor) -> torch.Tensor:
        """a = W h + b."""
        raise NotImplementedError

    def post(self, a: torch.Tensor) -> torch.Tensor:
        """h = pool(f(a)): the layer's output, the next layer's input."""
        return self.pooled(self.act(a))

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.pool == 1 else F.max_pool2d(z, self.pool)  # stride = window

    def carry(self, signal: torch.Tensor, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A signal at the layer's output h = pool(z) carried back to its pre-activation a (z = f(a)):
        through the max-pool (to the position that won each window, as autograd routes it) and then
        ⊙ f'(a). With the error at h this is bp's δ at a."""
        k = self.pool
        if k > 1:
            idx = F.max_pool2d(z, k, return_indices=True)[1]
            signal = torch.ops.aten.max_pool2d_with_indices_backward(signal, z, [k, k], [k, k], [0, 0], [1, 1],
                                                                     False, idx)
        return self.act.backward(signal, a, z)

    def backward(self, delta: torch.Tensor, h: torch.Tensor, feedback: torch.Tensor | None):
        """Given δ = ∂L/∂a for this layer's output and its input h, return
        (signal to the input computed with ``feedback`` in place of W — None if feedback is None,
        grad W, grad b). ``feedback`` has W's shape; with ``feedback = W`` this is backprop."""
        raise NotImplementedError

    @property
    def fan_in(self) -> int:
        return self.weight[0].numel()

    @property
    def fan_out(self) -> int:
        w = self.weight
        return w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)


class Linear(Layer):
    kind = "linear"

    def __init__(self, d_in: int, d_out: int, act: Activation):
        super().__init__(act)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.in_features, self.out_features = d_in, d_out

    def pre(self, h):
        return F.linear(h.flatten(1), self.weight, self.bias)

    def backward(self, delta, h, feedback):
        h2 = h.flatten(1)
        grad_in = None if feedback is None else (delta @ feedback).view_as(h)
        return grad_in, delta.t() @ h2, delta.sum(0)


class Conv(Layer):
    kind = "conv"

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, act: Activation,
                 pool: int = 1):
        super().__init__(act, pool)
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding = stride, padding

    def pre(self, h):
        return F.conv2d(h, self.weight, self.bias, self.stride, self.padding)

    def backward(self, delta, h, feedback):
        weight = self.weight if feedback is None else feedback
        mask = [feedback is not None, True, True]
        grad_in, grad_w, grad_b = torch.ops.aten.convolution_backward(
            delta, h, weight, [weight.shape[0]], [self.stride] * 2, [self.padding] * 2, [1, 1], False, [0, 0], 1, mask
        )
        return grad_in, grad_w, grad_b

    def out_size(self, size: int) -> int:
        """Height (or width) of the output h, pooled, for an input of that size."""
        k = self.weight.shape[-1]  # square kernels
        return ((size + 2 * self.padding - k) // self.stride + 1) // self.pool


# --------------------------------------------------------------------------- network
@dataclass
class Forward:
    """Everything one forward pass computed: inputs ``h[0..L-1]`` of each layer, pre-activations
    ``a[1..L]`` (stored 0-based: ``a[l]`` is layer l's output before f), the activations ``z[l] = f(a[l])``
    of the hidden layers before any pooling (the very tensor ``h[l+1]`` where layer l does not pool) and
    the logits."""

    h: list[torch.Tensor]  # h[l] = input of layer l (h[0] = x)
    a: list[torch.Tensor]  # a[l] = pre-activation of layer l
    logits: torch.Tensor
    z: list[torch.Tensor]  # z[l] = f(a[l]) of the hidden layers (l < L−1)


class Network(nn.Module):
    def __init__(self, spec: str, layers: list[Layer]):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer.post(layer.pre(h))
        return h

    def forward_all(self, x: torch.Tensor) -> Forward:
        hs, as_, zs = [], [], []
        h = x
        for layer in self.layers:
            hs.append(h)
            a = layer.pre(h)
            as_.append(a)
            z = layer.act(a)
            zs.append(z)
            h = layer.pooled(z)
        return Forward(hs, as_, h, zs[:-1])

    @property
    def activations(self) -> set[str]:
        return {layer.act.name for layer in self.layers[:-1]}

    @property
    def layer_kinds(self) -> set[str]:
        """The kinds of layer (``linear``, ``conv``) and ``maxpool`` if any layer pools."""
        pooled = {"maxpool"} if any(layer.pool > 1 for layer in self.layers) else set()
        return {layer.kind for layer in self.layers} | pooled

    def input_shapes(self, x_shape) -> list[tuple[int, ...]]:
        """The shape of one example of each layer's input, from the network input's (no computation)."""
        shapes, s = [], tuple(x_shape)
        for layer in self.layers:  # convolutions first, then linear layers (whose input is flat)
            shapes.append(s if layer.kind == "conv" else (layer.weight.shape[1],))
            if layer.kind == "conv":
                s = (layer.weight.shape[0], *(layer.out_size(d) for d in s[1:]))
        return shapes

    def weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]


def init_weights(net: Network, scheme: str, generator: torch.Generator) -> None:
    """Glorot-uniform (default, as in the literature), Kaiming-uniform or PyTorch's default; zero biases."""
    with torch.no_grad():
        for layer in net.layers:
            w = layer.weight
            if scheme == "glorot":
                bound = math.sqrt(6.0 / (layer.fan_in + layer.fan_out))
            elif scheme == "kaiming":
                bound = math.sqrt(6.0 / layer.fan_in)
            elif scheme == "torch":
                bound = 1.0 / math.sqrt(layer.fan_in)
            else:
                raise ConfigError(f"unknown init '{scheme}'; valid: glorot, kaiming, torch")
            w.copy_(torch.rand(w.shape, generator=generator, device=w.device) * 2 * bound - bound)
            layer.bias.zero_()


# --------------------------------------------------------------------------- specs → layers
def build_layers(spec: MLPSpec | CNNSpec, input_shape: tuple[int, ...], num_classes: int) -> list[Layer]:
    """The layers an :class:`MLPSpec` or :class:`CNNSpec` describes, for this input and class count."""
    if isinstance(spec, CNNSpec):
        if len(input_shape) != 3:
            raise ConfigError(f"a CNN needs image inputs (C, H, W); this dataset gives shape {input_shape}")
        c, hgt, wid = input_shape
        layers: list[Layer] = []
        for conv in spec.convs:
            layer = Conv(c, conv.channels, conv.kernel, conv.stride, conv.padding, activation(spec.activation), conv.pool)
            c, hgt, wid = conv.channels, layer.out_size(hgt), layer.out_size(wid)
            if min(hgt, wid) < 1:
                raise ConfigError(f"convolution {len(layers) + 1} of this network leaves nothing of inputs of shape "
                                  f"{input_shape}; it needs larger images")
            layers.append(layer)
        hidden, d = spec.hidden, c * hgt * wid
    else:
        hidden, d, layers = (spec.width,) * spec.depth, math.prod(input_shape), []
    for width in hidden:
        layers.append(Linear(d, width, activation(spec.activation)))
        d = width
    layers.append(Linear(d, num_classes, Identity()))
    return layers


def build_network(name: str, input_shape, num_classes: int, *, init: str = "glorot",
                  generator: torch.Generator | None = None, device="cpu") -> Network:
    spec = resolve_spec(name)
    net = Network(name, build_layers(spec, tuple(input_shape), num_classes)).to(device)
    init_weights(net, init, generator or torch.Generator(device=device).manual_seed(0))
    return net
