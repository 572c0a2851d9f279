"""Network presets and spec strings as plain data (no torch): the table of named networks.

A network is named by a preset (``mlp-5x256-tanh``, ``cnn-small-tanh``, ``lenet5-relu``) or by any string
``mlp-<depth>x<width>-<activation>`` (e.g. ``mlp-2x64-relu``). :func:`resolve_spec` turns a name into
an :class:`MLPSpec` or :class:`CNNSpec`; ``harness.networks.build_network`` builds its layers. Kept
apart from ``harness.networks`` (which needs torch) so that listing networks imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import ConfigError, UnknownNameError
from harness.registry import Registry

NETWORKS: Registry = Registry("network")

# the activations harness.networks implements (its ACTIVATIONS table is checked against these names)
ACTIVATION_NAMES = ("tanh", "leaky-relu", "relu", "linear")

MLP_PATTERN = re.compile(r"^mlp-(\d+)x(\d+)-([a-z-]+)$")


@dataclass(frozen=True)
class MLPSpec:
    """``depth`` hidden layers of ``width`` units with ``activation``, then a linear output layer."""

    depth: int
    width: int
    activation: str
    description: str = ""


@dataclass(frozen=True)
class ConvSpec:
    """One convolution ``kernel``×``kernel`` with ``stride`` and zero ``padding``, then the activation, then
    (``pool`` > 1) a non-overlapping ``pool``×``pool`` max-pool (window = stride, floor)."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    pool: int = 1


@dataclass(frozen=True)
class CNNSpec:
    """Convolutions (``convs``), then fully connected hidden layers of ``hidden`` units, then a linear
    output layer; every hidden layer uses ``activation``."""

    convs: tuple[ConvSpec, ...]
    activation: str
    description: str = ""
    hidden: tuple[int, ...] = ()


def register_network(name: str, *, override: bool = False):
    """Decorator-style registration of a preset: ``register_network("mlp-2x64-tanh")(MLPSpec(...))``."""
    return lambda spec: NETWORKS.register(name, spec, override=override)


for _name, _desc in [
    ("mlp-5x256-tanh", "MNIST/Fashion-MNIST MLP of Bartunov et al. 2018 and Meulemans et al. 2020"),
    ("mlp-3x1024-tanh", "CIFAR-10 fully connected MLP of Bartunov et al. 2018 and Meulemans et al. 2020"),
    ("mlp-1x1000-tanh", "784-1000-10 of Lillicrap et al. 2016 and Podlaski & Machens 2020"),
    ("mlp-2x128-tanh", "small MLP for quick runs on digits"),
]:
    _m = MLP_PATTERN.match(_name)
    register_network(_name)(MLPSpec(int(_m[1]), int(_m[2]), _m[3], _desc))

_STRIDED = (ConvSpec(16, 3, 2, 1), ConvSpec(32, 3, 2, 1))
register_network("cnn-small-tanh")(CNNSpec(_STRIDED, "tanh", "two strided 3x3 convolutions (16, 32 channels) + linear"))
register_network("cnn-small-relu")(CNNSpec(_STRIDED, "relu", "as cnn-small-tanh with ReLU"))
# LeNet-5 as BioTorch 0.0.16 builds it (biotorch/models/le_net.py, LeNetMNIST, for 32×32 inputs): conv5 6,
# max-pool 2, conv5 16, max-pool 2, conv5 120 (→ 1×1), fc 84, fc 10, ReLU. On 28×28 images conv1 pads by 2
# (as LeCun et al. 1998 padded MNIST to 32×32): every later shape is then that of the 32×32 original.
register_network("lenet5-relu")(CNNSpec(
    (ConvSpec(6, 5, 1, 2, pool=2), ConvSpec(16, 5, 1, 0, pool=2), ConvSpec(120, 5, 1, 0)), "relu",
    "LeNet-5 as in BioTorch (conv5 6, pool, conv5 16, pool, conv5 120, fc 84, fc 10; conv1 padded by 2)",
    hidden=(84,)))
# A small VGG-style network for 32×32 CIFAR-10 (ours, not a published configuration): three blocks of two
# 3×3 convolutions (32, 64, 128 channels, padding 1) each closed by a 2×2 max-pool (32 → 16 → 8 → 4), then
# fc 256 and the output layer.
register_network("vgg-small-relu")(CNNSpec(
    tuple(ConvSpec(c, 3, 1, 1, pool=2 if i % 2 else 1) for i, c in enumerate((32, 32, 64, 64, 128, 128))), "relu",
    "VGG-style: 3 blocks of two 3x3 convolutions (32, 64, 128 channels) + 2x2 max-pool, fc 256, linear",
    hidden=(256,)))


def resolve_spec(name: str) -> MLPSpec | CNNSpec:
    """A registered preset, or an ``mlp-<depth>x<width>-<activation>`` spec string."""
    if name in NETWORKS:
        return NETWORKS.get(name)
    m = MLP_PATTERN.match(name)
    if m:
        depth, width, act = int(m[1]), int(m[2]), m[3]
        if act not in ACTIVATION_NAMES:
            raise UnknownNameError("activation", act, ACTIVATION_NAMES)
        if depth < 1 or width < 1:
            raise ConfigError(f"network '{name}': depth and width must be ≥ 1")
        return MLPSpec(depth, width, act)
    raise UnknownNameError(
        "network (preset, or mlp-<depth>x<width>-<activation>)", name, NETWORKS.names()
    )
