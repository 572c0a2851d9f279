import pytest

from harness.errors import ConfigError, UnknownNameError
from harness.hparams import TrainConfig, parse_assignments, split_overrides
from harness.registry import get_algorithm


def test_defaults_and_string_values_are_converted():
    tc = TrainConfig.build({"lr": "3e-4", "batch_size": "32", "optimizer": "sgd"})
    assert tc.lr == 3e-4 and tc.batch_size == 32 and tc.optimizer == "sgd"


def test_unknown_key_rejected_with_valid_names():
    with pytest.raises(UnknownNameError, match="unknown hyperparameter.*'lrr'.*did you mean 'lr'"):
        TrainConfig.build({"lrr": 1})


@pytest.mark.parametrize("key,value,needle", [
    ("lr", -1, "greater than 0"), ("batch_size", 0, "greater than or equal to 1"),
    ("optimizer", "rmsprop", "must be one of"), ("lr", "abc", "valid number"),
])
def test_out_of_range_and_wrong_type_rejected_in_one_line(key, value, needle):
    with pytest.raises(ConfigError) as err:
        TrainConfig.build({key: value}, owner="training")
    assert needle in str(err.value) and key in str(err.value) and "\n" not in str(err.value)


def test_split_overrides_routes_keys_and_rejects_phantoms():
    fa = get_algorithm("fa")
    train, params = split_overrides(parse_assignments(["lr=0.01", "feedback_scale=2"]), fa.Params, "fa")
    assert train == {"lr": "0.01"} and params == {"feedback_scale": "2"}
    with pytest.raises(UnknownNameError, match="phantom"):
        split_overrides({"phantom": 1}, fa.Params, "fa")
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["novalue"])


def test_search_space_declared():
    space = TrainConfig.search_space()
    assert space["lr"]["kind"] == "loguniform" and space["lr"]["low"] < space["lr"]["high"]
