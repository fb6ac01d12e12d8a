"""Command line: one training run with per-epoch metrics.

    python -m model train --data digits --hidden 128 64 --optimizer adam --lr 1e-3 --epochs 20

Thin: parses, calls model.data / model.train, prints. Typed errors (ConfigError, DataError) become
one line on stderr and exit code 2; a diverged run exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from model.data import DataSpec, load_dataset
from model.errors import ConfigError, DataError
from model.mlp import (
    ACTIVATIONS,
    INITS,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    MLPConfig,
    load_npz_weights,
    save_npz_weights,
)
from model.optim import OPTIMIZERS, validate_lr, validate_optimizer
from model.train import EpochMetrics, TrainConfig, Trainer

EXAMPLES = """\
examples:
  python -m model train
  python -m model train --data digits --hidden 128 64 --optimizer adam --lr 1e-3 --epochs 20
  python -m model train --optimizer sgd --lr 0.05 --opt momentum=0.9 --opt nesterov=true
  python -m model train --data train.csv --target price --task regression --hidden 32
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model",
        description="Train one MLP and print its metrics.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="one training run: per-epoch metrics table, then test metrics",
        description="One training run: a per-epoch metrics table, then the final test metrics.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = train.add_argument_group("data")
    data.add_argument("--data", default="digits", help="digits | mnist | fashion-mnist | a path")
    data.add_argument("--target", help="target column of a CSV/Parquet file")
    data.add_argument("--task", default="classification", help="classification | regression")
    data.add_argument("--scale", default="standard", help="standard | minmax | none")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    model = train.add_argument_group("model")
    model.add_argument("--hidden", type=int, nargs="*", default=[128, 64], help="hidden sizes")
    model.add_argument(
        "--activation",
        nargs="+",
        default=["relu"],
        help=f"one for all hidden layers, or one per layer: {', '.join(ACTIVATIONS)}",
    )
    model.add_argument("--output-activation", default="none", help=" | ".join(OUTPUT_ACTIVATIONS))
    model.add_argument("--init", default="default", help=" | ".join(INITS))
    model.add_argument("--init-scale", type=float, help="a of uniform(-a, a), s of normal(0, s)")
    model.add_argument("--no-bias", action="store_true", help="layers without bias")
    model.add_argument(
        "--loss", help=f"{' | '.join(LOSSES)} (default: cross_entropy, mse for regression)"
    )
    model.add_argument("--load-weights", metavar="NPZ", help="start from W1, b1, W2, ... in NPZ")
    model.add_argument("--save-weights", metavar="NPZ", help="write the trained weights to NPZ")
    run = train.add_argument_group("training")
    run.add_argument("--optimizer", default="adam", help=" | ".join(OPTIMIZERS))
    run.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an optimizer hyperparameter, e.g. momentum=0.9 or nesterov=true (repeatable)",
    )
    run.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--seed", type=int, default=0, help="seed of the initial weights and shuffle")
    run.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    run.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return parser


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, float | bool]:
    """NAME=VALUE pairs as a dict: true/false become bools, anything else a float."""
    params: dict[str, float | bool] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--opt: {pair!r} is not NAME=VALUE")
        if text.lower() in ("true", "false"):
            params[name] = text.lower() == "true"
            continue
        try:
            params[name] = float(text)
        except ValueError:
            raise ConfigError(f"--opt {name}: {text!r} is not a number or true/false") from None
    return params


def _format_row(m: EpochMetrics, classification: bool) -> str:
    score = m.val_acc if classification else m.val_rmse
    return (
        f"{m.epoch:>5} {m.train_loss:>11.4f} {m.val_loss:>9.4f} {score:>8.4f} "
        f"{m.epoch_time_s:>7.2f} {m.samples_per_s:>10,.0f}  {m.status}"
    )


def train(args: argparse.Namespace) -> int:
    """Run one training from parsed arguments; returns the exit code."""
    params = parse_hyperparameters(args.opt)
    validate_optimizer(args.optimizer, params)  # before loading data: fail fast on typos
    validate_lr(args.lr)
    data = load_dataset(
        DataSpec(
            source=args.data,
            target=args.target,
            task=args.task,
            scale=args.scale,
            split_seed=args.split_seed,
        )
    )
    activation = args.activation[0] if len(args.activation) == 1 else tuple(args.activation)
    model_cfg = MLPConfig(
        input_size=data.n_features,
        hidden=tuple(args.hidden),
        output_size=data.n_outputs,
        activation=activation,
        output_activation=args.output_activation,
        init=args.init,
        init_scale=args.init_scale,
        bias=not args.no_bias,
        task=args.task,
        loss=args.loss or ("cross_entropy" if args.task == "classification" else "mse"),
    )
    cfg = TrainConfig(
        model=model_cfg,
        optimizer=args.optimizer,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        optimizer_params=params,
        device=args.device,
        num_threads=args.threads,
    )
    trainer = Trainer(cfg, data)
    if args.load_weights:
        load_npz_weights(trainer.model, args.load_weights)
    classification = args.task == "classification"
    print(
        f"{data.name}: {data.n_train} train / {len(data.x_val)} val / {len(data.x_test)} test, "
        f"{data.n_features} features; layers {list(model_cfg.layer_sizes)}, "
        f"{args.optimizer} lr {args.lr:g}{f' {params}' if params else ''}, batch {args.batch_size}"
    )
    score = "val_acc" if classification else "val_rmse"
    print(f"epoch  train_loss  val_loss {score:>8}  time_s  samples/s  status")
    records = []
    for record in trainer.run():
        print(_format_row(record, classification), flush=True)
        records.append(record)
    if args.save_weights:
        save_npz_weights(trainer.model, args.save_weights)
    final = records[-1]
    if final.status == "diverged":
        print(f"diverged at epoch {final.epoch}: non-finite loss", file=sys.stderr)
        return 1
    test = f"acc {final.test_acc:.4f}" if classification else f"rmse {final.test_rmse:.4f}"
    print(f"test: loss {final.test_loss:.4f}, {test}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return train(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
