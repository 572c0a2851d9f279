"""The study tools under sweeps/studies/ (not part of the harness): their yardsticks measure what they say."""

from types import SimpleNamespace

import pytest
import torch

from harness.network_presets import resolve_spec
from harness.networks import build_network
from tests.test_pooling import K, LENET_SHAPE, copy_into


@pytest.mark.parametrize("name,shape", [("lenet5-relu", LENET_SHAPE), ("vgg-small-relu", (3, 32, 32)),
                                        ("cnn-small-tanh", (1, 8, 8)), ("mlp-2x16-tanh", (1, 8, 8))])
def test_bare_pytorch_yardstick_is_the_same_network(name, shape):
    """The plain-PyTorch bp loop (``creditbench bench``'s floor, also timing.py's) times the very network the
    harness builds."""
    from harness.bench import bare_network

    x = torch.randn(3, *shape)
    bare = bare_network(resolve_spec(name), SimpleNamespace(x_train=x, num_classes=K))
    ours = build_network(name, shape, K)
    copy_into(ours, bare)
    with torch.no_grad():
        torch.testing.assert_close(bare(x), ours(x), rtol=1e-5, atol=1e-6)
