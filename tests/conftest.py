import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# CREDITBENCH_TORCH_THREADS: set by `make mutants` (one thread per mutant worker)
torch.set_num_threads(int(os.environ.get("CREDITBENCH_TORCH_THREADS", 0)) or min(2, os.cpu_count() or 1))


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
