import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
MUTATION_RUN = bool(os.environ.get("CREDITBENCH_MUTATION_RUN"))  # set by tools/mutants.py (`make mutants`)
torch.set_num_threads(1 if MUTATION_RUN else min(2, os.cpu_count() or 1))  # mutation runs: one thread per worker


def _warm_up_torch() -> None:
    """Pay torch's lazy initialisation (FlopCounterMode's first use alone takes seconds) with plain torch code."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.add: lambda *a, out_shape=None, **k: 1}):
        F.cross_entropy(torch.tanh(x @ w.T), torch.arange(4)).backward()
    m = w.detach()
    torch.linalg.pinv(m), torch.linalg.svd(m), torch.linalg.solve(m[:3] @ m[:3].T + torch.eye(3), torch.ones(3))
    torch.func.jvp(lambda t: torch.tanh(t @ m.T), (x.detach(),), (torch.ones(4, 3),))
    torch.optim.Adam([w], lr=1e-3, foreach=False).step()
    F.conv2d(torch.randn(1, 1, 5, 5, requires_grad=True), torch.randn(2, 1, 3, 3), stride=2, padding=1).sum().backward()


if MUTATION_RUN:
    # mutmut forks one process per mutant from a server that has imported the tests: pay the data loaders'
    # import (scikit-learn) and torch's lazy initialisation there once, not in every mutant's process
    from harness.datasets import load_dataset

    load_dataset("digits")
    _warm_up_torch()


def _names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark every test whose own code uses ``Trainer`` (whole training trials, seconds each) as
    ``trainer``: mutation runs leave them out (``-m "not trainer"`` in pyproject's [tool.mutmut])."""
    for item in items:
        fn = getattr(item, "function", None)
        if fn is not None and "Trainer" in _names(fn.__code__):
            item.add_marker(pytest.mark.trainer)


@pytest.fixture(scope="session")
def digits():
    from harness.datasets import load_dataset

    return load_dataset("digits")


def tiny_trial(algo: str, **overrides) -> dict:
    cfg = {"algo": algo, "dataset": "digits", "network": "mlp-2x32-tanh", "seed": 0,
           "train": {"epochs": 2, "batch_size": 64}, "probe_size": 64}
    for key, value in overrides.items():
        if key in ("train", "params"):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that runs a sweep in-process (tests/test_sweep.py, test_reliability.py)."""
    import ray

    from harness.sweep import worker_runtime_env

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_worker_niceness"] = "0"  # as harness.sweep does for its own local Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env=worker_runtime_env(),
             log_to_driver=False, object_store_memory=128 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Tests of tiny networks run single-threaded: fastest, and immune to a busy machine's
    oversubscription (``pytestmark = pytest.mark.usefixtures("one_thread")`` in their file)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def oracle_close(actual, expected, what="", *, rtol: float, atol: float):
    """``actual`` equals the independent oracle ``expected``: same shape, a non-zero oracle (a zero one
    would prove nothing), within ``rtol`` and an absolute floor of ``atol`` times the oracle's largest
    entry. The oracle tests bind their tolerance once: ``close = partial(oracle_close, rtol=…, atol=…)``."""
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: the oracle is zero, the comparison would prove nothing"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")
