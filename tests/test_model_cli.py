"""python -m model train: help, typed errors as exit code 2, a short run, weight files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from model.__main__ import main, parse_hyperparameters
from model.errors import ConfigError

FAST = ["--hidden", "8", "--batch-size", "256", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_num_threads():
    """--threads sets torch's process-wide thread count; leave it as other tests found it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_help_shows_an_example():
    result = subprocess.run(
        [sys.executable, "-m", "model", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "python -m model train --data digits --hidden 128 64" in result.stdout
    assert "--optimizer" in result.stdout and "--batch-size" in result.stdout


def test_unknown_optimizer_is_one_line_naming_field_and_valid_names(capsys):
    assert main(["train", "--optimizer", "sgdd"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: optimizer: unknown optimizer 'sgdd' (valid: sgd, adam, adamw, rmsprop, adagrad)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "sgd", "--opt", "momentum=1.5"], "optimizer.sgd.momentum: 1.5"),
        (["--opt", "beta1"], "--opt: 'beta1' is not NAME=VALUE"),
        (["--activation", "relux"], "model.activation: unknown activation 'relux'"),
        (["--lr", "0"], "lr: 0.0 is not a finite number > 0"),
        (["--batch-size", "0"], "batch_size: 0"),
        (["--data", "no/such/file.csv"], "no/such/file.csv"),
    ],
)
def test_bad_values_exit_2_with_one_line(capsys, args, message):
    assert main(["train", *FAST, "--epochs", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_argparse_type_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["train", "--lr", "fast"])
    assert exc.value.code == 2


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().err


def test_hyperparameter_pairs():
    assert parse_hyperparameters(["momentum=0.9", "nesterov=True"]) == {
        "momentum": 0.9,
        "nesterov": True,
    }
    with pytest.raises(ConfigError, match="--opt eps: 'small' is not a number"):
        parse_hyperparameters(["eps=small"])


def test_train_prints_a_table_and_test_metrics_and_saves_weights(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    assert main(["train", *FAST, "--epochs", "2", "--save-weights", str(weights)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("epoch"))
    assert "val_acc" in lines[header]
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[0] for row in rows] == ["1", "2"]
    assert [row[-1] for row in rows] == ["running", "completed"]
    assert lines[-1].startswith("test: loss ")
    with np.load(weights) as npz:
        assert {name: npz[name].shape for name in npz.files} == {
            "W1": (64, 8),
            "b1": (8,),
            "W2": (8, 10),
            "b2": (10,),
        }


def test_load_weights_with_the_wrong_shape_exits_2(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    np.savez(weights, W1=np.zeros((64, 9)), b1=np.zeros(9), W2=np.zeros((9, 10)), b2=np.zeros(10))
    assert main(["train", *FAST, "--epochs", "1", "--load-weights", str(weights)]) == 2
    assert "W1 (layer 1) has shape (64, 9), model expects (64, 8)" in capsys.readouterr().err


def test_diverged_run_exits_1(capsys):
    assert main(["train", *FAST, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e6"]) == 1
    captured = capsys.readouterr()
    assert "diverged" in captured.out
    assert captured.err.startswith("diverged at epoch 1")
