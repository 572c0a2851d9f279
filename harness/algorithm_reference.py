"""docs/algorithms.md: every built-in algorithm as ``creditbench list`` describes it (hyperparameters with
their defaults, valid ranges and search spaces) and the plausibility record of its default configuration.

    python -m harness.algorithm_reference > docs/algorithms.md      (``make docs``)

tests/test_algorithms_contract.py regenerates it and fails when the checked-in file differs, so the
reference stays what the code declares.
"""

from __future__ import annotations

import torch

HEADER = """# Algorithm reference

Generated from the registry by `make docs`; a test fails when this file and the code disagree. For each
built-in algorithm: what `creditbench list` prints (reference, what it supports, every hyperparameter
with its default, valid values and default search space, and where a knob acts only in some
configurations), then the plausibility record of its default configuration, built on `{network}`
(options change it where the algorithm's section in [design.md](design.md) says so; every trial records
its own). Third-party plugins are listed by `creditbench list` alone.
"""
NETWORK = "mlp-2x8-tanh"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def plausibility_line(cls) -> str:
    from harness.networks import build_network

    net = build_network(NETWORK, (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    p = cls(net, generator=torch.Generator().manual_seed(0)).plausibility()
    return (f"Plausibility of the defaults: weight transport **{p.transport}**, local **{yes(p.local)}**, "
            f"phases **{p.phases}**, feedback learning **{yes(p.feedback_learning)}**: {p.notes}.")


def reference() -> str:
    from harness.listing import algorithm_lines
    from harness.registry import ALGORITHMS, load_plugins

    load_plugins()
    parts = [HEADER.format(network=NETWORK)]
    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        if not cls.__module__.startswith("algorithms."):
            continue
        block = "\n".join(algorithm_lines(name, cls.spec(), indent=""))
        parts.append(f"## {name}\n\n```text\n{block}\n```\n\n{plausibility_line(cls)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
