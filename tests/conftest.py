import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
