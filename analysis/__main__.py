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
MAIN_EXAMPLE = """\
example:
  python -m analysis report results/digits-optimizers
  python -m analysis summary results/digits-optimizers
"""


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m analysis`` (every command's --help has an example)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Figures, tables and a report from a study's Parquet results.",
        epilog=MAIN_EXAMPLE,
        formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="write the report",
        epilog=REPORT_EXAMPLE,
        formatter_class=raw,
        description="Write figures, tables, report.md and report.html for a results directory.",
    )
    summary = commands.add_parser(
        "summary",
        help="print the summary table",
        epilog=SUMMARY_EXAMPLE,
        formatter_class=raw,
        description="Print the summary tables and warnings of a results directory.",
    )
    for command in (report, summary):
        command.add_argument(
            "results",
            metavar="RESULTS_DIR",
            help="results/<name> directory, or a URI (file://, s3://, gs://)",
        )
        command.add_argument(
            "--metric", choices=METRICS, help="selection metric (default: the study's train.metric)"
        )
        command.add_argument(
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
        "--format",
        type=_formats,
        default=("png",),
        metavar="png,svg",
        help="figure formats, comma-separated (default: png)",
    )
    return parser


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

    report = write_report(
        args.results,
        args.out,
        metric=args.metric,
        formats=args.format,
        target=args.target,
        value=args.value,
    )
    print(f"wrote {len(report.files)} files to {report.out} (open report.html or report.md)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 unusable results or arguments)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        (_report if args.command == "report" else _summary)(args)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
