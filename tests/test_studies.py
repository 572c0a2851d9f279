"""The study tools under sweeps/studies/ (not part of the harness): their yardsticks measure what they say."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.network_presets import resolve_spec
from harness.networks import build_network
from tests.test_pooling import K, LENET_SHAPE, copy_into

STUDIES = Path(__file__).resolve().parent.parent / "sweeps" / "studies"


def study_module(name: str):
    spec = importlib.util.spec_from_file_location(f"study_{name}", STUDIES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,shape", [("lenet5-relu", LENET_SHAPE), ("vgg-small-relu", (3, 32, 32)),
                                        ("cnn-small-tanh", (1, 8, 8)), ("mlp-2x16-tanh", (1, 8, 8))])
def test_bare_pytorch_yardstick_is_the_same_network(name, shape):
    """timing.py's plain-PyTorch bp loop times the very network the harness builds."""
    timing = study_module("timing")
    x = torch.randn(3, *shape)
    bare = timing.bare_network(resolve_spec(name), SimpleNamespace(x_train=x, num_classes=K))
    ours = build_network(name, shape, K)
    copy_into(ours, bare)
    with torch.no_grad():
        torch.testing.assert_close(bare(x), ours(x), rtol=1e-5, atol=1e-6)
