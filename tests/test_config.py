"""sweep.config: the study file is parsed, defaulted and validated before Ray starts.

BAD_STUDIES is a reusable table: each case is a dotted path into ``valid_study()``, the value to
put there (or DELETE), and substrings the one-line ConfigError must contain (the field and the
value). The CLI tests reuse it: ``mutated(case)`` gives the bad study as a plain YAML-able dict.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from model.errors import ConfigError
from sweep.config import (
    StudyConfig,
    apply_overrides,
    check_study_against_data,
    dump_study,
    load_study,
    parse_study,
    study_fingerprint,
)

CONFIGS = Path(__file__).resolve().parent.parent / "sweep" / "configs"
DELETE = object()  # as a case value: remove the key instead of setting it


def valid_study() -> dict[str, Any]:
    """A fresh, valid study mapping (the issue's example, 45 trials, ASHA)."""
    return {
        "name": "digits-optimizers",
        "data": {
            "source": "digits",
            "task": "classification",
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "scale": "standard",
            "split_seed": 0,
        },
        "model": {
            "hidden": [128, 64],
            "activation": "relu",
            "init": "default",
            "loss": "cross_entropy",
        },
        "train": {"epochs": 20, "metric": "val_loss", "mode": "min"},
        "search": {
            "batch_size": [16, 64, 256],
            "seeds": 1,
            "optimizers": {
                "sgd": {"lr": [0.3, 0.1, 0.03, 0.01, 0.003], "momentum": 0.9},
                "adam": {"lr": [0.01, 0.003, 0.001, 0.0003, 0.0001]},
                "rmsprop": {"lr": {"logspace": [1.0e-5, 1.0e-2, 5]}},
            },
        },
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25},
    }


class BadCase(NamedTuple):
    path: str  # dotted path into valid_study()
    value: Any  # YAML-able value to set there, or DELETE
    expected: tuple[str, ...]  # substrings of the ConfigError message

    @property
    def id(self) -> str:
        shown = "DELETE" if self.value is DELETE else repr(self.value)
        return f"{self.path}={shown}"


def mutated(case: BadCase) -> dict[str, Any]:
    """valid_study() with the case's value set at (or removed from) its path."""
    study = valid_study()
    *parents, last = case.path.split(".")
    node = study
    for part in parents:
        node = node.setdefault(part, {})
    if case.value is DELETE:
        del node[last]
    else:
        node[last] = copy.deepcopy(case.value)
    return study


def _case(path: str, value: Any, *expected: str) -> BadCase:
    return BadCase(path, value, expected)


_LR = "search.optimizers.sgd.lr"
BAD_STUDIES: list[BadCase] = [
    # unknown keys, at every level (the valid names are listed)
    _case("trian", {"epochs": 3}, "trian: unknown key", "valid: name, description, data"),
    _case("data.sorce", "digits", "data.sorce: unknown key", "valid: source"),
    _case("model.hiden", [8], "model.hiden: unknown key", "hidden"),
    _case("train.epochz", 3, "train.epochz: unknown key", "valid: epochs, metric"),
    _case("search.batch_sizes", [8], "search.batch_sizes: unknown key", "batch_size"),
    _case("scheduler.grace", 1, "scheduler.grace: unknown key", "grace_period"),
    _case("resources.gpus", 1, "resources.gpus: unknown key", "gpus_per_trial"),
    _case(_LR, {"logspace": [1e-3, 1e-1, 3], "n": 3}, f"{_LR}.n: unknown key", "logspace"),
    # wrong types (a bool is not an integer)
    _case("train.epochs", True, "train.epochs: expected an integer", "true"),
    _case("train.epochs", "20", "train.epochs", "'20'"),
    _case("train.epochs", 2.5, "train.epochs", "2.5"),
    _case("train", [20], "train: expected a mapping", "[20]"),
    _case("name", 42, "name: expected a string", "42"),
    _case("search.batch_size", [16, True], "search.batch_size[1]", "true"),
    _case("search.seeds", True, "search.seeds", "true"),
    _case("search.seeds", "3", "search.seeds", "'3'"),
    _case("model.hidden", 128, "model.hidden", "128"),
    _case("model.hidden", [128, "64"], "model.hidden[1]", "'64'"),
    _case("model.bias", "yes", "model.bias", "'yes'"),
    _case("data.val_fraction", "0.2", "data.val_fraction", "'0.2'"),
    _case("data.split_seed", 1.5, "data.split_seed", "1.5"),
    _case("resources.cpus_per_trial", None, "resources.cpus_per_trial", "null"),
    _case("search.optimizers.sgd.momentum", "high", "search.optimizers.sgd.momentum", "'high'"),
    _case("search.optimizers.sgd.nesterov", 1, "search.optimizers.sgd.nesterov", "got 1"),
    _case("search.optimizers.sgd", [0.1], "search.optimizers.sgd", "[0.1]"),
    # learning rates
    _case(_LR, [0.3, 0.1, -0.1], f"{_LR}[2]: learning rate must be > 0, got -0.1"),
    _case(_LR, [0.0], f"{_LR}[0]", "got 0.0"),
    _case(_LR, -0.5, f"{_LR}: learning rate must be > 0", "-0.5"),
    _case(_LR, [0.1, "fast"], f"{_LR}[1]", "'fast'"),
    _case(_LR, [0.1, float("nan")], f"{_LR}[1]", "nan"),
    _case(_LR, [], f"{_LR}: must not be empty"),
    _case(_LR, [0.1, 0.01, 0.1], f"{_LR}[2]: duplicate learning rate", "0.1"),
    _case(_LR, DELETE, f"{_LR}: required field missing"),
    _case(_LR, {"logspace": [0, 0.1, 3]}, f"{_LR}.logspace[0]", "got 0"),
    _case(_LR, {"logspace": [0.1, 0.01, 3]}, f"{_LR}.logspace[1]", "0.01"),
    _case(_LR, {"logspace": [1e-4, 1e-2, 1]}, f"{_LR}.logspace[2]: n must be >= 2", "got 1"),
    _case(_LR, {"logspace": [1e-4, 1e-2]}, f"{_LR}.logspace: expected [low, high, n]"),
    # batch sizes
    _case("search.batch_size", [16, 0], "search.batch_size[1]: batch size must be > 0", "got 0"),
    _case("search.batch_size", [-8], "search.batch_size[0]", "-8"),
    _case("search.batch_size", [], "search.batch_size: must not be empty"),
    _case("search.batch_size", [16, 64, 16], "search.batch_size[2]: duplicate", "16"),
    _case("search.batch_size", DELETE, "search.batch_size: required field missing"),
    # optimizers and their hyperparameters (valid names come from model.optim.OPTIMIZERS)
    _case("search.optimizers", {}, "search.optimizers: must name at least one", "sgd"),
    _case("search.optimizers.sgdd", {"lr": [0.1]}, "unknown optimizer 'sgdd'", "valid: sgd"),
    _case(
        "search.optimizers.adam.momentum",
        0.9,
        "search.optimizers.adam.momentum: unknown hyperparameter",
        "beta1",
    ),
    _case("search.optimizers.sgd.momentum", 1.5, "search.optimizers.sgd.momentum", "1.5"),
    _case(
        "search.optimizers.sgd",
        {"lr": [0.1], "nesterov": True},
        "search.optimizers.sgd.nesterov",
        "momentum",
    ),
    # model (valid names come from model.mlp's tables)
    _case("model.activation", "relux", "model.activation: unknown activation 'relux'", "tanh"),
    _case("model.activation", ["relu", "tanhh"], "model.activation[1]", "'tanhh'"),
    _case("model.activation", ["relu"], "model.activation", "['relu']"),
    _case("model.output_activation", "softplus", "model.output_activation", "'softplus'"),
    _case("model.output_activation", "softmax", "model.output_activation", "'softmax'"),
    _case("model.init", "he", "model.init: unknown init 'he'", "kaiming_normal"),
    _case("model.init_scale", -1, "model.init_scale: must be > 0", "-1"),
    _case("model.init_scale", 0.1, "model.init_scale", "0.1"),  # init default takes no scale
    _case("model.loss", "hinge", "model.loss: unknown loss 'hinge'", "mse"),
    _case("model.hidden", [128, 0], "model.hidden[1]", "got 0"),
    # train: metric, mode, epochs
    _case("train.metric", "val_los", "train.metric: unknown metric 'val_los'", "val_loss"),
    _case("train.metric", "val_rmse", "train.metric", "val_rmse", "regression"),
    _case("train.mode", "minimize", "train.mode: unknown mode 'minimize'", "min, max"),
    _case("train.mode", "max", "train.mode", "'max'"),  # val_loss is minimised
    _case("train.epochs", 0, "train.epochs: must be >= 1", "got 0"),
    _case("train.epochs", DELETE, "train.epochs: required field missing"),
    _case("train.checkpoint_every", 0, "train.checkpoint_every", "got 0"),
    _case("train.max_failures", -1, "train.max_failures", "-1"),
    # seeds
    _case("search.seeds", 0, "search.seeds: the number of seeds must be >= 1", "got 0"),
    _case("search.seeds", -2, "search.seeds", "-2"),
    _case("search.seeds", [], "search.seeds: must not be empty"),
    _case("search.seeds", [0, 1, 1], "search.seeds[2]: duplicate seed", "1"),
    _case("search.seeds", [0, -1], "search.seeds[1]", "-1"),
    # resources
    _case("resources.gpus_per_trial", -0.5, "resources.gpus_per_trial: must be >= 0", "-0.5"),
    _case("resources.gpus_per_trial", 1.5, "resources.gpus_per_trial", "1.5"),
    _case("resources.cpus_per_trial", 0, "resources.cpus_per_trial: must be > 0", "got 0"),
    _case(
        "search.optimizers.rmsprop.lr",
        {"logspace": [1e-5, 1e-2, 2**63]},
        "search.optimizers.rmsprop.lr.logspace[2]: n must be <= 100000",
    ),
    _case("resources.models_per_trial", 0, "resources.models_per_trial: must be >= 1", "got 0"),
    _case("resources.models_per_trial", "many", "resources.models_per_trial", "'many'"),
    _case("resources.models_per_trial", 2.5, "resources.models_per_trial", "2.5"),
    _case("resources.models_per_trial", True, "resources.models_per_trial", "got true"),
    _case("train.select", "last", "train.select: unknown selection rule 'last'", "best_epoch"),
    _case("resources.cpus_per_trial", -1, "resources.cpus_per_trial", "-1"),
    # scheduler
    _case("scheduler.type", "hyperband", "scheduler.type", "'hyperband'", "asha, none"),
    _case("scheduler.grace_period", 0, "scheduler.grace_period", "got 0"),
    _case("scheduler.grace_period", 21, "scheduler.grace_period", "21", "train.epochs (20)"),
    _case("scheduler.reduction_factor", 1, "scheduler.reduction_factor: must be >= 2", "1"),
    # data
    _case("data.task", "clustering", "data.task: unknown task 'clustering'", "regression"),
    _case("data.task", "regression", "model.loss", "cross_entropy"),
    _case("data.scale", "robust", "data.scale: unknown scale 'robust'", "minmax"),
    _case("data.source", "digitz", "data.source: unknown source 'digitz'", "fashion-mnist"),
    _case("data.source", 7, "data.source", "got 7"),
    _case("data.val_fraction", 0, "data.val_fraction", "got 0"),
    _case("data.val_fraction", 1.2, "data.val_fraction", "1.2"),
    _case("data.test_fraction", -0.1, "data.test_fraction", "-0.1"),
    _case("data.test_fraction", 0.85, "data.test_fraction", "0.85", "val_fraction"),
    _case("data.split_seed", -1, "data.split_seed", "-1"),
    # name: a safe directory name
    _case("name", "../evil", "name: must be a safe directory name", "'../evil'"),
    _case("name", "", "name", "''"),
    _case("name", "my study", "name", "'my study'"),
    _case("name", DELETE, "name: required field missing"),
    _case("search", DELETE, "search: required field missing"),
]


def test_valid_study_parses_to_the_expected_config() -> None:
    study = parse_study(valid_study())
    assert study.name == "digits-optimizers"
    assert study.data.source == "digits"
    assert study.model.hidden == (128, 64)
    assert study.model.loss == "cross_entropy"
    assert (study.train.epochs, study.train.metric, study.train.mode) == (20, "val_loss", "min")
    assert study.search.batch_sizes == (16, 64, 256)
    assert study.search.seeds == (0,)
    assert [opt.name for opt in study.search.optimizers] == ["sgd", "adam", "rmsprop"]
    assert study.search.optimizers[0].params == {"momentum": 0.9}
    assert study.search.optimizers[1].params == {}
    assert study.scheduler.type == "asha" and study.scheduler.grace_period == 2
    assert study.resources.gpus_per_trial == 0.25


@pytest.mark.parametrize("case", BAD_STUDIES, ids=lambda case: case.id)
def test_bad_study_raises_one_line_naming_field_and_value(case: BadCase) -> None:
    with pytest.raises(ConfigError) as info:
        parse_study(mutated(case))
    message = str(info.value)
    assert "\n" not in message
    for expected in case.expected:
        assert expected in message, f"{expected!r} not in {message!r}"


def test_bad_study_table_cases_are_distinct() -> None:
    ids = [case.id for case in BAD_STUDIES]
    assert len(ids) == len(set(ids))


def test_metric_sets_the_default_mode_and_regression_the_default_loss() -> None:
    raw = valid_study()
    raw["train"] = {"epochs": 5, "metric": "val_acc"}
    assert parse_study(raw).train.mode == "max"
    raw["data"]["task"] = "regression"
    raw["train"] = {"epochs": 5, "metric": "val_rmse"}
    del raw["model"]["loss"]
    study = parse_study(raw)
    assert (study.train.mode, study.model.loss) == ("min", "mse")


def test_minimal_study_gets_every_default() -> None:
    raw = {
        "name": "tiny",
        "train": {"epochs": 3},
        "search": {"batch_size": 32, "optimizers": {"adam": {"lr": 0.001}}},
    }
    resolved = parse_study(raw).to_dict()
    assert resolved["search"] == {
        "batch_size": [32],
        "seeds": [0],
        "optimizers": {"adam": {"lr": [0.001]}},
    }
    assert resolved["data"]["source"] == "digits"
    assert resolved["model"]["hidden"] == [128, 64]
    assert resolved["train"] == {
        "epochs": 3,
        "metric": "val_loss",
        "mode": "min",
        "checkpoint_every": 5,
        "max_failures": 2,
        "select": "best_epoch",
    }
    assert resolved["scheduler"] == {"type": "asha", "grace_period": 1, "reduction_factor": 3}
    assert resolved["resources"] == {
        "cpus_per_trial": 1,
        "gpus_per_trial": 0,
        "models_per_trial": "auto",
    }


def test_logspace_expands_to_n_log_spaced_values_with_exact_ends() -> None:
    raw = valid_study()
    raw["search"]["optimizers"] = {"adam": {"lr": {"logspace": [1.0e-5, 1.0e-2, 7]}}}
    lrs = parse_study(raw).search.optimizers[0].lrs
    assert len(lrs) == 7
    assert (lrs[0], lrs[-1]) == (1e-5, 1e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert all(math.isclose(r, 10**0.5, rel_tol=1e-9) for r in ratios)


def test_yaml_reads_1e_minus_3_as_a_number(tmp_path: Path) -> None:
    # Plain PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; the study loader does not.
    text = yaml.safe_dump(valid_study(), sort_keys=False).replace("0.0001", "1e-4")
    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert 1e-4 in load_study(path).search.optimizers[1].lrs


def test_seeds_count_and_list() -> None:
    raw = valid_study()
    raw["search"]["seeds"] = 3
    assert parse_study(raw).search.seeds == (0, 1, 2)
    raw["search"]["seeds"] = [7, 3]
    assert parse_study(raw).search.seeds == (7, 3)


def test_per_layer_activations_and_bool_hyperparameters() -> None:
    raw = valid_study()
    raw["model"]["activation"] = ["tanh", "gelu"]
    raw["search"]["optimizers"]["sgd"]["nesterov"] = True
    study = parse_study(raw)
    assert study.model.activation == ("tanh", "gelu")
    assert study.search.optimizers[0].params == {"momentum": 0.9, "nesterov": True}


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_shipped_configs_parse_and_round_trip(name: str, tmp_path: Path) -> None:
    study = load_study(CONFIGS / f"{name}.yaml")
    assert parse_study(study.to_dict()) == study
    path = tmp_path / "study.yaml"
    path.write_text(dump_study(study))
    assert load_study(path) == study
    assert study_fingerprint(load_study(path)) == study_fingerprint(study)


def test_default_study_is_the_study_the_issue_asks_for() -> None:
    study = load_study(CONFIGS / "default.yaml")
    assert study.data.source == "digits"
    assert study.search.batch_sizes == (16, 64, 256)
    assert len(study.search.seeds) == 3
    assert study.model.hidden == (128, 64)
    assert (study.train.epochs, study.train.metric) == (20, "val_loss")
    assert study.scheduler.type == "none"  # the full grid: packed, it needs no ASHA to be quick
    assert (study.train.select, study.resources.models_per_trial) == ("best_epoch", "auto")
    assert (study.resources.cpus_per_trial, study.resources.gpus_per_trial) == (1, 0)
    optimizers = {opt.name: opt for opt in study.search.optimizers}
    assert {"sgd", "adam", "rmsprop"} <= set(optimizers)
    assert optimizers["sgd"].params["momentum"] == 0.9
    for opt in optimizers.values():
        assert len(opt.lrs) >= 5
        assert max(opt.lrs) / min(opt.lrs) >= 100, f"{opt.name} LRs span < 2 decades"


def test_asha_study_is_large_enough_for_cutting_to_pay() -> None:
    study = load_study(CONFIGS / "asha.yaml")
    assert (study.scheduler.type, study.scheduler.grace_period) == ("asha", 2)
    assert study.scheduler.reduction_factor == 3 and study.train.epochs == 30
    configurations = (
        sum(len(o.lrs) for o in study.search.optimizers)
        * len(study.search.batch_sizes)
        * len(study.search.seeds)
    )
    assert configurations == 192


def test_smoke_study_is_tiny() -> None:
    study = load_study(CONFIGS / "smoke.yaml")
    assert study.scheduler.type == "none"
    assert study.train.epochs <= 3
    assert sum(len(opt.lrs) for opt in study.search.optimizers) * len(study.search.seeds) <= 4


def test_round_trip_of_a_study_using_every_feature() -> None:
    raw = valid_study()
    raw["description"] = "everything"
    raw["model"].update(activation=["tanh", "relu"], init="uniform", init_scale=0.1, bias=False)
    raw["train"].update(metric="val_acc", mode="max", checkpoint_every=2, max_failures=0)
    raw["search"]["seeds"] = [4, 2]
    raw["search"]["optimizers"]["sgd"]["nesterov"] = True
    raw["scheduler"] = {"type": "none"}
    study = parse_study(raw)
    assert parse_study(study.to_dict()) == study
    assert yaml.safe_load(dump_study(study)) == study.to_dict()


def test_fingerprint_ignores_key_order_only() -> None:
    study = parse_study(valid_study())
    reordered = dict(reversed(list(valid_study().items())))
    assert study_fingerprint(parse_study(reordered)) == study_fingerprint(study)
    changed = valid_study()
    changed["train"]["epochs"] = 21
    assert study_fingerprint(parse_study(changed)) != study_fingerprint(study)
    # 1 and 1.0 CPUs are the same study
    same = valid_study()
    same["resources"]["cpus_per_trial"] = 1.0
    assert study_fingerprint(parse_study(same)) == study_fingerprint(study)


def test_study_is_hashable() -> None:
    study = parse_study(valid_study())
    assert hash(study) == hash(parse_study(valid_study()))


def test_mlp_config_carries_the_model_section() -> None:
    study = parse_study(valid_study())
    cfg = study.mlp_config(input_size=64, output_size=10)
    assert (cfg.input_size, cfg.hidden, cfg.output_size) == (64, (128, 64), 10)
    assert (cfg.task, cfg.loss) == ("classification", "cross_entropy")


# ----------------------------------------------------------------------------------- load_study


def _write(tmp_path: Path, study: dict[str, Any] | str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
    return path


def test_load_study_applies_overrides_parsed_as_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, valid_study())
    study = load_study(
        path,
        [
            "train.epochs=5",
            "search.seeds=[1, 2]",
            "search.optimizers.adam.lr={logspace: [1e-4, 1e-2, 3]}",
            "search.optimizers.adagrad.lr=[0.1]",
            "scheduler.type=none",
            "train.checkpoint_every=1",  # a key the file does not set
            "description=a b=c",
        ],
    )
    assert study.train.epochs == 5
    assert study.search.seeds == (1, 2)
    assert study.search.optimizers[1].lrs == (1e-4, 1e-3, 1e-2)
    assert study.search.optimizers[-1].name == "adagrad"
    assert study.scheduler.type == "none"
    assert study.train.checkpoint_every == 1
    assert study.description == "a b=c"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trian.epochs=5", ["trian", "valid: name, description, data"]),
        ("train.epochz=5", ["train has no field 'epochz'", "valid: epochs"]),
        ("train.epochs.max=5", ["train.epochs has no field 'max'"]),
        ("search.optimizers.adam.momentum=0.9", ["'momentum'", "valid: lr, beta1"]),
        ("train.epochs", ["expected KEY=VALUE"]),
        ("=5", ["expected KEY=VALUE"]),
        ("train..epochs=5", ["expected KEY=VALUE"]),
        ("train.epochs=[1,", ["train.epochs=[1,", "invalid YAML"]),
        ("train.epochs=0", ["train.epochs: must be >= 1", "got 0"]),
        ("name=x/y", ["name", "'x/y'"]),
    ],
)
def test_bad_override_names_the_path(tmp_path: Path, override: str, expected: list[str]) -> None:
    path = _write(tmp_path, valid_study())
    with pytest.raises(ConfigError) as info:
        load_study(path, [override])
    for text in expected:
        assert text in str(info.value)


def test_override_into_a_scalar_is_an_error() -> None:
    raw = valid_study()
    with pytest.raises(ConfigError, match=r"search\.optimizers\.sgd\.lr is .*not a mapping"):
        apply_overrides(raw, ["search.optimizers.sgd.lr.logspace=[0.1, 1, 2]"])


def test_overrides_leave_the_input_untouched() -> None:
    raw = valid_study()
    apply_overrides(raw, ["train.epochs=3", "search.optimizers.adagrad.lr=[0.1]"])
    assert raw == valid_study()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "invalid YAML: line"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("", "empty"),
        ("- a\n- b\n", "a study must be a mapping"),
    ],
)
def test_unreadable_study_file_names_the_path(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_study_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: study file not found"):
        load_study(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------- checks against the data


def test_batch_size_larger_than_the_training_split() -> None:
    study = parse_study(valid_study())
    check_study_against_data(study, n_train=256)
    with pytest.raises(ConfigError) as info:
        check_study_against_data(study, n_train=100)
    message = str(info.value)
    assert "search.batch_size[2]" in message and "256" in message and "100 rows" in message


def test_study_config_is_frozen() -> None:
    study = parse_study(valid_study())
    assert isinstance(study, StudyConfig)
    with pytest.raises(AttributeError):
        study.name = "other"  # type: ignore[misc]


def test_override_into_an_empty_section(tmp_path: Path) -> None:
    path = _write(tmp_path, {**valid_study(), "model": None})
    assert load_study(path, ["model.hidden=[8]"]).model.hidden == (8,)
