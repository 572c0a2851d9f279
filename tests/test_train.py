import json

import pandas as pd
import pytest
import torch

from harness.algorithm import Algorithm, Capabilities
from harness.errors import CreditbenchError, UnsupportedError
from harness.networks import build_network
from harness.registry import ALGORITHMS, get_algorithm, register_algorithm
from harness.train import Trainer
from tests.conftest import tiny_trial

QUIET = open("/dev/null", "w")
FA_PLAUSIBILITY = get_algorithm("fa").plausibility


def test_run_directory_holds_every_file(digits, tmp_path):
    summary = Trainer(tiny_trial("bp"), data=digits).run(tmp_path, log=QUIET)
    for name in ("epochs.csv", "summary.json", "config.json", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    assert list(epochs.epoch) == [1, 2] and epochs.updates.tolist() == [16, 32]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["test_acc"] == summary["test_acc"] and on_disk["config"]["seed"] == 0
    assert on_disk["config"]["train"]["batch_size"] == 64 and on_disk["config"]["algo_version"] == 1
    # cumulative FLOPs grow linearly with updates
    assert epochs.flops_total[1] == pytest.approx(2 * epochs.flops_total[0])


def test_patience_stops_and_test_acc_is_taken_at_best_validation_epoch(digits):
    t = Trainer(tiny_trial("bp", train={"epochs": 200, "patience": 2, "lr": 0.05}), data=digits)
    s = t.run(None, log=QUIET)
    assert s["status"] == "ok" and s["stop_reason"] == "patience" and s["epochs"] < 200
    rows = t.epochs_frame()
    best = rows.loc[rows.epoch == s["best_epoch"]].iloc[0]
    assert best.val_acc == s["best_val_acc"] == rows.val_acc.max()
    assert best.test_acc == s["test_acc"]
    assert s["epochs"] - s["best_epoch"] == 2


def test_min_delta_counts_small_gains_as_no_improvement(digits):
    s = Trainer(tiny_trial("bp", train={"epochs": 50, "patience": 3, "min_delta": 0.95}), data=digits).run(None, log=QUIET)
    assert s["stop_reason"] == "patience" and s["epochs"] == 4  # no epoch can beat epoch 1 by 0.95


def test_divergence_ends_the_trial_as_diverged(digits):
    s = Trainer(tiny_trial("bp", train={"lr": 1e4, "epochs": 5}), data=digits).run(None, log=QUIET)
    assert s["status"] == "diverged" and s["epochs"] == 1 and "100" in s["stop_reason"]


def test_nan_loss_is_diverged(digits):
    bad = digits.__class__(**{**digits.__dict__, "x_train": digits.x_train * float("nan")})
    s = Trainer(tiny_trial("fa"), data=bad).run(None, log=QUIET)
    assert s["status"] == "diverged" and s["stop_reason"] == "non-finite loss"


def test_other_trial_checkpoint_is_refused(digits, tmp_path):
    Trainer(tiny_trial("bp"), data=digits).run(tmp_path, log=QUIET)
    with pytest.raises(CreditbenchError, match="different trial.*seed"):
        Trainer(tiny_trial("bp", seed=3), data=digits).run(tmp_path, log=QUIET)


def test_finished_trial_resumes_without_training(digits, tmp_path):
    first = Trainer(tiny_trial("bp"), data=digits).run(tmp_path, log=QUIET)
    again = Trainer(tiny_trial("bp"), data=digits).run(tmp_path, log=QUIET)
    assert again["updates"] == first["updates"] and again["test_acc"] == first["test_acc"]


def test_unsupported_network_is_refused_with_supported_list():
    class LinearOnly(Algorithm):
        name = "linear-only-test"
        description = "x"
        reference = "x"
        plausibility = FA_PLAUSIBILITY
        capabilities = Capabilities(layers=frozenset({"linear"}), activations=frozenset({"tanh"}))

    register_algorithm(LinearOnly)
    try:
        for spec, needle in (("cnn-small-tanh", "does not support conv layers.*supported layers: linear"),
                             ("mlp-2x8-relu", "does not support activation relu.*supported: tanh")):
            net = build_network(spec, (1, 8, 8), 10)
            with pytest.raises(UnsupportedError, match=needle):
                LinearOnly(net)
    finally:
        ALGORITHMS.unregister("linear-only-test")


def test_fa_trains_the_cnn_preset(digits):
    s = Trainer(tiny_trial("fa", network="cnn-small-tanh", train={"epochs": 5, "lr": 0.01}), data=digits).run(None, log=QUIET)
    assert s["status"] == "ok" and s["test_acc"] > 0.85


@pytest.mark.parametrize("optimizer,expected", [("sgd", (torch.optim.SGD, 0.0)), ("momentum", (torch.optim.SGD, 0.9)),
                                                ("adam", (torch.optim.Adam, None))])
def test_shared_optimizer_is_built_from_the_training_config(digits, optimizer, expected):
    t = Trainer(tiny_trial("fa", train={"optimizer": optimizer, "lr": 0.05}), data=digits)
    cls, momentum = expected
    assert type(t.optimizer) is cls and t.optimizer.param_groups[0]["lr"] == 0.05
    if momentum is not None:
        assert t.optimizer.param_groups[0]["momentum"] == momentum


def test_sgd_applies_the_algorithms_update_exactly(digits):
    t = Trainer(tiny_trial("fa", train={"optimizer": "sgd", "lr": 0.1}), data=digits)
    x, y = digits.x_train[:64], digits.y_train[:64]
    before = [p.detach().clone() for p in t.net.parameters()]
    t.algo.step(x, y)
    t.optimizer.step()
    for p, b in zip(t.net.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad)


@pytest.mark.parametrize("scheme,bound", [("glorot", lambda i, o: (6 / (i + o)) ** 0.5),
                                          ("kaiming", lambda i, o: (6 / i) ** 0.5), ("torch", lambda i, o: i ** -0.5)])
def test_init_schemes_use_their_bounds(scheme, bound):
    from harness.networks import init_weights

    net = build_network("mlp-1x400-tanh", (1, 8, 8), 10)
    init_weights(net, scheme, torch.Generator().manual_seed(0))
    w = net.layers[0].weight
    b = bound(64, 400)
    assert w.abs().max() <= b and w.abs().max() > 0.99 * b and torch.all(net.layers[0].bias == 0)


@pytest.mark.parametrize("optimizer", ["adam", "momentum", "sgd"])
def test_grouped_optimizer_updates_are_bit_for_bit_the_per_tensor_loop(optimizer, digits):
    """The trainer's optimizers use ``foreach=True`` (less overhead per update); on CPU that is the per-tensor
    loop's arithmetic exactly, so results do not depend on it."""
    from harness.train import Trainer

    cfg = tiny_trial("bp", train={"optimizer": optimizer, "weight_decay": 1e-3, "lr": 0.05})
    a, b = Trainer(cfg, data=digits), Trainer(cfg, data=digits)
    loop = type(b.optimizer)(b.net.parameters(), **{**b.optimizer.defaults, "foreach": False})
    assert a.optimizer.defaults["foreach"] is True
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for p, q in zip(a.net.parameters(), b.net.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        a.optimizer.step()
        loop.step()
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q)
