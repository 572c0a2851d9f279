"""Network presets and spec strings as plain data (no torch): the table of named networks.

A network is named by a preset (``mlp-5x256-tanh``, ``cnn-small-tanh``) or by any string
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
class CNNSpec:
    """Small strided CNN (no pooling): conv3x3/s2 → f → conv3x3/s2 → f → linear."""

    channels: tuple[int, ...]
    activation: str
    description: str = ""


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

register_network("cnn-small-tanh")(CNNSpec((16, 32), "tanh", "two strided 3x3 convolutions (16, 32 channels) + linear"))
register_network("cnn-small-relu")(CNNSpec((16, 32), "relu", "as cnn-small-tanh with ReLU"))


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
