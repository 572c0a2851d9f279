"""Learning-rate schedules of the shared optimizer (TrainConfig.lr_schedule): the rate of every epoch
against torch's own schedulers, what the trainer applies and records, resumes, and bad input."""

import math

import pandas as pd
import pytest
import torch

from harness.errors import ConfigError, CreditbenchError
from harness.hparams import TrainConfig
from harness.train import Trainer
from tests.conftest import tiny_trial

QUIET = open("/dev/null", "w")


def torch_rates(make_scheduler, epochs, lr=0.1):
    """The learning rate of epochs 1..epochs under a torch scheduler stepped once per epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_multistep_and_cosine_match_torchs_schedulers_epoch_by_epoch():
    tc = TrainConfig.build({"lr": 0.1, "epochs": 9, "lr_schedule": "multistep", "lr_milestones": "3,6",
                            "lr_gamma": 0.3})
    want = torch_rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 6], gamma=0.3), 9)
    got = [tc.lr_at(e) for e in range(1, 10)]
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert got[:3] == [0.1] * 3 and got[3] == pytest.approx(0.03, rel=1e-12) and got[8] == pytest.approx(0.009, rel=1e-12)
    tc = TrainConfig.build({"lr": 0.1, "epochs": 7, "lr_schedule": "cosine"})
    want = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7), 7)
    assert [tc.lr_at(e) for e in range(1, 8)] == pytest.approx(want, rel=1e-12, abs=0)
    assert tc.lr_at(1) == 0.1 and tc.lr_at(8) == pytest.approx(0.0, abs=1e-15)  # the last epoch's rate is > 0
    assert TrainConfig.build({"lr": 0.1}).lr_at(50) == 0.1  # constant by default


def test_trainer_sets_and_records_the_rate_of_every_epoch(digits):
    train = {"epochs": 3, "lr": 0.01, "optimizer": "sgd", "lr_schedule": "multistep", "lr_milestones": "1",
             "lr_gamma": 0.5}
    t = Trainer(tiny_trial("bp", train=train), data=digits)
    t.run(None, log=QUIET)
    assert t.epochs_frame().lr.tolist() == [0.01, 0.005, 0.005]
    assert t.optimizer.param_groups[0]["lr"] == 0.005
    # the rate is what the optimizer uses: with gamma 1 epoch 1 is the same and epoch 2 is not
    flat = Trainer(tiny_trial("bp", train={**train, "lr_gamma": 1.0}), data=digits)
    flat.run(None, log=QUIET)
    rows, flat_rows = t.epochs_frame(), flat.epochs_frame()
    assert rows.train_loss[0] == flat_rows.train_loss[0] and rows.train_loss[1] != flat_rows.train_loss[1]


def test_resume_continues_the_schedule(digits, tmp_path):
    train = {"epochs": 4, "lr_schedule": "multistep", "lr_milestones": "2", "lr_gamma": 0.1}
    straight = Trainer(tiny_trial("fa", train=train), data=digits)
    straight.run(None, log=QUIET)
    Trainer(tiny_trial("fa", train={**train, "epochs": 2}), data=digits).run(tmp_path, log=QUIET)
    resumed = Trainer(tiny_trial("fa", train=train), data=digits)
    resumed.run(tmp_path, log=QUIET)
    cols = [c for c in straight.epochs_frame().columns if c not in ("wall_time_s", "seconds_per_update",
                                                                   "peak_memory_bytes")]
    pd.testing.assert_frame_equal(resumed.epochs_frame()[cols], straight.epochs_frame()[cols])
    assert resumed.epochs_frame().lr.tolist() == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4], rel=1e-12)


def test_cosine_resume_with_other_epochs_is_refused(digits, tmp_path):
    train = {"epochs": 2, "lr_schedule": "cosine"}
    Trainer(tiny_trial("bp", train=train), data=digits).run(tmp_path, log=QUIET)
    with pytest.raises(CreditbenchError, match=r"cosine schedule spans the trial's epochs \(2\); resume with the "
                                                r"same --epochs$"):
        Trainer(tiny_trial("bp", train={**train, "epochs": 3}), data=digits).run(tmp_path, log=QUIET)


@pytest.mark.parametrize("values,message", [
    ({"lr_schedule": "multistep", "lr_milestones": "75,50"}, "positive and strictly increasing"),
    ({"lr_schedule": "multistep", "lr_milestones": "0,5"}, "positive and strictly increasing"),
    ({"lr_schedule": "multistep", "lr_milestones": "5,5"}, "positive and strictly increasing"),
    ({"lr_schedule": "multistep", "lr_milestones": "a,b"}, "expected comma-separated epochs"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"lr_gamma": 0.5}, "does not act in this configuration"),  # no phantom knobs under `constant`
    ({"lr_schedule": "cosine", "lr_milestones": "5"}, "does not act in this configuration"),
])
def test_bad_schedules_are_one_line_errors(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.build(values, refuse_inactive=True)
    assert "\n" not in str(err.value)


def test_milestones_are_normalised_and_inactive_knobs_are_not_recorded():
    tc = TrainConfig.build({"lr_schedule": "multistep", "lr_milestones": " 5, 10 "})
    assert tc.lr_milestones == "5,10" and math.isclose(tc.lr_at(11), 1e-3 * 0.01)
    assert {"lr_milestones", "lr_gamma"} <= tc.active_names()
    assert not {"lr_milestones", "lr_gamma"} & TrainConfig.build({}).active_names()
