"""Command line: ``python -m analysis report|summary RESULTS_DIR``; ``--help`` shows examples.

Thin: parse, call the library, print. A ResultsError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from analysis.errors import ResultsError
from analysis.load import METRICS

REPORT_EXAMPLE = """\
example:
  python -m analysis report results/digits-optimizers
  python -m analysis report s3://bucket/results/digits-optimizers --out ./report \\
      --metric val_acc --format png,svg
  python -m analysis report results/digits-optimizers --value final

Writes report.md, report.html (self-contained), summary.csv and the other tables, and
figures/ into --out (default: RESULTS_DIR/report, on the same filesystem as RESULTS_DIR).
--value final draws figures 1 and 3 from each trial's last epoch instead of its best one;
configurations are always chosen and tested as the study's train.select says.
"""
SUMMARY_EXAMPLE = """\
example:
  python -m analysis summary results/digits-optimizers --metric val_acc

Prints the best configuration per optimizer, the best LR per batch size, the paired
comparison of the optimizers over seeds, the selection rule and the warnings.
"""
OPTUNA_EXAMPLE = """\
example:
  python -m analysis optuna results/digits-optimizers --storage sqlite:///study.db
  optuna-dashboard sqlite:///study.db

One Optuna trial per configuration (params, one intermediate value per epoch of the study's
metric, COMPLETE / PRUNED (early-stopped) / FAIL (diverged, error) / RUNNING, test metrics as
user_attrs). Running it again updates the study in place; nothing is added twice.
Needs: pip install 'mlp-sweep[dashboard]'
"""
DASHBOARD_EXAMPLE = """\
example:
  python -m analysis dashboard results/digits-optimizers --port 8080

Exports the study into an Optuna storage (a temporary SQLite file unless --storage) and serves
optuna-dashboard on 127.0.0.1: parallel coordinates, hyperparameter importance, the trial table.
While the sweep runs, the study is exported again whenever its Parquet tables change
(every --refresh seconds at most). Ctrl-C stops it.
Needs: pip install 'mlp-sweep[dashboard]'
"""
MAIN_EXAMPLE = """\
example:
  python -m analysis report results/digits-optimizers
  python -m analysis summary results/digits-optimizers
  python -m analysis dashboard results/digits-optimizers
"""


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m analysis`` (every command's --help has an example)."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Figures, tables and a report from a study's Parquet results.",
        epilog=MAIN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, example: str, description: str):
        """A subcommand reading RESULTS_DIR, with its example under --help."""
        sub = commands.add_parser(
            name,
            help=help_text,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description=description,
        )
        sub.add_argument(
            "results",
            metavar="RESULTS_DIR",
            help="results/<name> directory, or a URI (file://, s3://, gs://)",
        )
        return sub

    report = command(
        "report",
        "write the report",
        REPORT_EXAMPLE,
        "Write figures, tables, report.md and report.html for a results directory.",
    )
    summary = command(
        "summary",
        "print the summary table",
        SUMMARY_EXAMPLE,
        "Print the summary tables and warnings of a results directory.",
    )
    for sub in (report, summary):
        sub.add_argument(
            "--metric", choices=METRICS, help="selection metric (default: the study's train.metric)"
        )
        sub.add_argument(
            "--target",
            type=float,
            help="metric value for steps/time-to-target (default: 95%% of the best final value)",
        )
    report.add_argument("--out", help="output directory or URI (default: RESULTS_DIR/report)")
    report.add_argument(
        "--value",
        metavar="best|final",
        help="values in figures 1 and 3: best epoch or final epoch of each trial "
        "(default: as the study's train.select)",
    )
    report.add_argument(
        "--mlflow",
        metavar="URI",
        help="attach the report to the study's MLflow parent run at this tracking URI",
    )
    report.add_argument(
        "--format",
        type=_formats,
        default=("png",),
        metavar="png,svg",
        help="figure formats, comma-separated (default: png)",
    )
    optuna = command(
        "optuna",
        "write the study into an Optuna storage",
        OPTUNA_EXAMPLE,
        "Write (or update) the study as an Optuna study in an RDB storage.",
    )
    dashboard = command(
        "dashboard",
        "serve optuna-dashboard for the study",
        DASHBOARD_EXAMPLE,
        "Serve optuna-dashboard on 127.0.0.1 for a study, finished or running.",
    )
    for sub in (optuna, dashboard):
        sub.add_argument("--study-name", help="the Optuna study's name (default: the study's name)")
    optuna.add_argument(
        "--storage", required=True, help="Optuna RDB storage URL, e.g. sqlite:///study.db"
    )
    dashboard.add_argument(
        "--storage", help="Optuna RDB storage URL (default: a temporary SQLite file)"
    )
    dashboard.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dashboard.add_argument(
        "--refresh",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often to look for new results (default: 10)",
    )
    return parser


def _optuna(args: argparse.Namespace) -> None:
    from analysis.optuna_export import export_study

    done = export_study(args.results, args.storage, study_name=args.study_name)
    print(
        f"Optuna study {done.study_name} in {args.storage}: {done.added} added, "
        f"{done.updated} updated, {done.unchanged} unchanged"
    )


def _dashboard(args: argparse.Namespace) -> None:
    from analysis.optuna_export import serve_dashboard

    if not 0 <= args.port <= 65535:
        raise ResultsError(f"--port: {args.port} is not a port number (0-65535)")
    if not args.refresh > 0:
        raise ResultsError(f"--refresh: {args.refresh} must be > 0 seconds")
    serve_dashboard(
        args.results,
        port=args.port,
        storage_url=args.storage,
        study_name=args.study_name,
        refresh_s=args.refresh,
        announce=lambda line: print(line, flush=True),
    )


def _summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from analysis.load import load_results
    from analysis.report import display_table, report_tables, selection_notes
    from analysis.summarize import analyze

    analysis = analyze(load_results(args.results), metric=args.metric, target=args.target)
    tables = report_tables(analysis)
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(selection_notes(analysis)[0])
        print(
            f"{analysis.study.name}: best configuration per optimizer "
            f"({analysis.metric.name}, {analysis.metric.mode}imized on validation)"
        )
        print(display_table(tables["summary.csv"]).to_string(index=False))
        print("\nbest learning rate per optimizer and batch size")
        print(display_table(tables["best_lr.csv"]).to_string(index=False))
        if not tables["paired.csv"].empty:
            print("\npaired comparison over seeds (a - b per seed, 95% paired t-interval)")
            print(display_table(tables["paired.csv"]).to_string(index=False))
    for check in analysis.checks:
        print(f"warning [{check.kind}]: {check.message}")


def _report(args: argparse.Namespace) -> None:
    from analysis.report import write_report

    run_id = _mlflow_run(args.mlflow, args.results) if args.mlflow else None
    report = write_report(
        args.results,
        args.out,
        metric=args.metric,
        formats=args.format,
        target=args.target,
        value=args.value,
    )
    print(f"wrote {len(report.files)} files to {report.out} (open report.html or report.md)")
    if run_id is not None:
        from sweep.tracking import attach_report

        attach_report(args.mlflow, run_id, report.out)
        print(f"attached to MLflow run {run_id} at {args.mlflow} (artifacts: report/)")


def _mlflow_run(uri: str, results: str) -> str:
    """The study's MLflow parent run, found before anything is written."""
    from model.errors import ConfigError
    from sweep.tracking import report_run

    try:
        return report_run(uri, results)
    except ConfigError as exc:
        raise ResultsError(str(exc)) from exc


COMMANDS = {"report": _report, "summary": _summary, "optuna": _optuna, "dashboard": _dashboard}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 unusable results or arguments)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from sweep.signals import exit_process

    exit_process(main())
