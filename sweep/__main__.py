"""Command line: ``python -m sweep run|resume|validate|status|dir`` (also ``mlp-sweep``).

Thin: parse, call the library, turn typed errors into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

# Before NumPy is imported (pyarrow imports it): no transparent huge pages for NumPy's large
# arrays. With them, under Linux's default THP defrag setting ("madvise"), a fresh 188 MB array
# waits for the kernel to compact memory: 0.02 s or 0.7 s by chance on a 2-core VM, against a
# steady 0.08 s in small pages. The driver's large arrays live only while a data set loads.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from model.errors import ConfigError, DataError  # noqa: E402
from sweep import signals  # noqa: E402
from sweep.cluster import ClusterAddressError, resolve_address  # noqa: E402
from sweep.storage import StorageError  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP give 143 and 129 (128 + the signal)
USER_ERRORS = (ConfigError, DataError, StorageError, ClusterAddressError)

EXAMPLES = {
    "run": "example: python -m sweep run sweep/configs/default.yaml --set train.epochs=5\n"
    "         python -m sweep run sweep/configs/default.yaml --mlflow sqlite:///mlflow.db",
    "resume": "example: python -m sweep resume results/digits-optimizers",
    "validate": "example: python -m sweep validate sweep/configs/default.yaml",
    "status": "example: python -m sweep status results/digits-optimizers",
    "dir": "example: python -m sweep dir sweep/configs/default.yaml --results results",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweep",
        description="Run a hyperparameter study of a PyTorch MLP on Ray Tune.",
        epilog="example: python -m sweep run sweep/configs/default.yaml",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command("run", "Run a study: every optimizer x lr x batch size x seed on Ray Tune.")
    _study_args(run)
    _ray_args(run)
    run.add_argument(
        "--exist-ok", action="store_true", help="resume when the results already hold this study"
    )
    resume = command("resume", "Finish an interrupted study from its results directory.")
    resume.add_argument("dir", metavar="DIR", help="results directory (or URI) of the study")
    _ray_args(resume)
    validate = command("validate", "Check a study file and its data; start nothing.")
    _study_args(validate)
    status = command("status", "Show how far a study has got, from its results directory.")
    status.add_argument("dir", metavar="DIR", help="results directory (or URI) of the study")
    status.add_argument("--json", action="store_true", help="print the counts as JSON")
    where = command("dir", "Print the results directory a study would use.")
    _study_args(where)
    return parser


def _study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="the study file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set train.epochs=5 (repeatable; VALUE is YAML)",
    )
    parser.add_argument("--name", help="study name (results go to RESULTS/NAME)")
    parser.add_argument("--results", default="results", help="results root (default ./results)")
    parser.add_argument("--storage", help="results root as a path or URI (s3://, gs://, file://)")


ADDRESS_HELP = (
    "join this Ray cluster (host:port, auto, ray://host:port). Without --address, RAY_ADDRESS "
    "is used when set (as `ray job submit` sets it); with neither, a private local Ray on "
    "127.0.0.1 is started (a cluster left by `ray start` is joined only with --address auto)"
)


def _ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help=ADDRESS_HELP)
    parser.add_argument(
        "--pending-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop (exit 2) when no node can hold a trial for this long "
        "(default 900, time for an autoscaler to add a node; 0 waits for ever)",
    )
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard")
    parser.add_argument("--tensorboard", action="store_true", help="keep Ray's result loggers")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--num-gpus", type=float, help="GPUs of the local Ray (default: detected)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray's own output")
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the study to MLflow at this tracking URI (sqlite:///mlflow.db, "
        "http://host:5000): a parent run per study, a child run per configuration; "
        "needs pip install 'mlp-sweep[mlflow]'",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "resume"):
        signals.arm()  # SIGTERM / SIGHUP stop the sweep as Ctrl-C does
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        message = " ".join(f"{exc}{_address_origin(args, exc)}".split())  # one line, always
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"interrupted ({signals.describe()})", file=sys.stderr)
        return signals.exit_code(EXIT_INTERRUPTED)


def _address_origin(args, exc: Exception) -> str:
    """Say so when a bad cluster address came from RAY_ADDRESS rather than --address."""
    if isinstance(exc, ClusterAddressError) and not getattr(args, "address", None):
        if os.environ.get("RAY_ADDRESS"):
            return " (from RAY_ADDRESS; unset it for a local run)"
    return ""


def _load(args):
    from sweep.config import load_study

    overrides = list(args.overrides) + ([f"name={args.name}"] if args.name else [])
    return load_study(args.study, overrides)


def _options(args, **extra):
    from sweep.launch import DEFAULT_PENDING_TIMEOUT_S, RunOptions

    timeout = args.pending_timeout
    return RunOptions(
        results=getattr(args, "results", "results"),
        storage=getattr(args, "storage", None),
        address=resolve_address(args.address),
        pending_timeout_s=DEFAULT_PENDING_TIMEOUT_S if timeout is None else timeout,
        dashboard=args.dashboard,
        tensorboard=args.tensorboard,
        verbose=args.verbose,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        progress=sys.stderr,
        mlflow=args.mlflow,
        **extra,
    )


def cmd_run(args) -> int:
    from sweep import launch

    study = _load(args)
    opts = _options(args)
    out = launch.study_dir(study, opts)
    if args.exist_ok and launch.holds_study(out, study):
        return _resume(out, study, opts)
    prepared = launch.prepare(study, opts)  # checks pass: the data loads and Ray starts...
    from sweep import runner  # ...while Ray Tune and torch are imported

    return _finish(runner.run_study(study, opts, prepared=prepared))


def cmd_resume(args) -> int:
    from sweep import launch

    return _resume(args.dir, launch.load_saved_study(args.dir), _options(args))


def _resume(out: str, study, opts) -> int:
    from sweep import launch

    prepared = launch.prepare(study, opts, resume=True)
    from sweep import runner

    return _finish(runner.resume_study(out, opts, prepared=prepared))


def _finish(summary) -> int:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.statuses.items()))
    print(
        f"{summary.done}/{summary.total} configurations done ({counts or 'none'})", file=sys.stderr
    )
    if summary.interrupted:
        how = f"stopped by {signals.describe()}" if signals.received() else "interrupted"
        print(f"{how}; finish with: python -m sweep resume {summary.out}", file=sys.stderr)
        return signals.exit_code(EXIT_INTERRUPTED)
    print(f"results: {summary.out}")
    return 0


def cmd_validate(args) -> int:
    from model.data import load_arrays
    from sweep.config import check_study_against_data
    from sweep.space import trial_count

    study = _load(args)
    data = load_arrays(study.data)
    check_study_against_data(study, data.n_train)
    print(
        f"ok: {study.name}: {trial_count(study)} trials on {data.name} ({data.n_train} train rows)"
    )
    return 0


def cmd_dir(args) -> int:
    from sweep.launch import RunOptions, study_dir

    study = _load(args)
    print(study_dir(study, RunOptions(results=args.results, storage=args.storage)))
    return 0


def cmd_status(args) -> int:
    from sweep.status import study_status

    report = study_status(args.dir)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_status(report))
    return 0


def format_status(report: dict) -> str:
    lines = [f"study {report['name']}: {report['done']}/{report['total']} trials done"]
    for status, n in sorted(report["statuses"].items()):
        lines.append(f"  {status:<14}{n}")
    lines.append(f"  {'pending':<14}{report['pending']}")
    if report.get("best"):
        lines.append(f"best: {report['best']}")
    lines.append(f"started {report.get('started')}, ended {report.get('ended') or '-'}")
    return "\n".join(lines)


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "validate": cmd_validate,
    "status": cmd_status,
    "dir": cmd_dir,
}


def cli() -> None:
    """The ``mlp-sweep`` entry point: main(), then a quick exit (signals.exit_process)."""
    signals.exit_process(main())


if __name__ == "__main__":
    cli()
