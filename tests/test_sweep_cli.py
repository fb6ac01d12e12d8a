"""python -m sweep: help, one-line validation errors with exit code 2 and nothing written,
status, and Ctrl-C followed by resume."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, sweep_command
from test_config import BAD_STUDIES, mutated
from test_reliability_e2e import journal, restarts

from sweep import launch, runner
from sweep.__main__ import EXAMPLES, main

COMMANDS = ("run", "resume", "validate", "status", "dir")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert EXAMPLES[command] in capsys.readouterr().out


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the run tries to start or join Ray."""

    def refuse(opts, *starting):
        raise AssertionError("Ray was started for a study that should have been rejected")

    monkeypatch.setattr(launch, "start_ray", refuse)
    monkeypatch.setattr(runner, "ray_session", refuse)


@pytest.fixture
def fake_ray(monkeypatch):
    """Ray starts while the data loads (nothing is written then): stand in for it, so that a
    data error is seen after 'Ray started' without starting one."""
    started = []

    @contextlib.contextmanager
    def session(opts, starting):
        yield

    monkeypatch.setattr(launch, "start_ray", started.append)
    monkeypatch.setattr(runner, "ray_session", session)
    return started


def run_rejected(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


# A spread of the config table: unknown keys, types, ranges, names, metric, seeds, epochs, GPUs.
CONFIG_CASES = [
    case
    for case in BAD_STUDIES
    if case.path
    in {
        "search.optimizers.sgd.lr",
        "search.batch_size",
        "train.metric",
        "train.epochs",
        "search.seeds",
        "model.activation",
        "resources.gpus_per_trial",
        "search.optimizers.sgd.momentum",
        "search.optimizers",
        "model.loss",
    }
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda c: c.id)
def test_bad_study_exits_2_naming_the_field_and_writes_nothing(case, tmp_path, capsys, no_ray):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(mutated(case)))
    results = tmp_path / "results"
    err = run_rejected(["run", str(path), "--results", str(results)], capsys)
    for expected in case.expected:
        assert expected in err
    assert not results.exists()


def test_errors_that_need_the_data_or_the_results_dir(study_file, tmp_path, capsys, fake_ray):
    results = tmp_path / "results"
    # batch size larger than the training split (digits: 1257 rows)
    err = run_rejected(
        ["run", str(study_file({"search": {"batch_size": [4096]}})), "--results", str(results)],
        capsys,
    )
    assert "search.batch_size" in err and "4096" in err
    # a missing data file
    missing = tmp_path / "nope.csv"
    err = run_rejected(
        ["run", str(study_file({"data": {"source": str(missing)}})), "--results", str(results)],
        capsys,
    )
    assert "nope.csv" in err
    # bad data: NaN in a feature column
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "a,b,label\n1,2,x\n3,,y\n" + "".join(f"{i},{i},{'xy'[i % 2]}\n" for i in range(40))
    )
    err = run_rejected(
        [
            "run",
            str(study_file({"data": {"source": str(bad), "target": "label"}})),
            "--results",
            str(results),
        ],  # fmt: skip
        capsys,
    )
    assert "bad.csv" in err
    # an unusable results directory: a file where the directory should be
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = run_rejected(["run", str(study_file()), "--results", str(blocker / "sub")], capsys)
    assert "results" in err and str(blocker) in err
    assert not results.exists()  # nothing written, though Ray (a stand-in) was up meanwhile
    assert len(fake_ray) == 3  # the three data errors; the results directory is checked first


def test_results_dir_holding_a_different_study_is_refused(study_file, tmp_path, capsys, no_ray):
    results = tmp_path / "results"
    (results / "tiny").mkdir(parents=True)
    other = yaml.safe_load(study_file().read_text())
    other["train"]["epochs"] = 7
    from sweep.config import dump_study, parse_study

    (results / "tiny" / "study.yaml").write_text(dump_study(parse_study(other)))
    before = sorted(os.listdir(results / "tiny"))
    err = run_rejected(["run", str(study_file()), "--results", str(results)], capsys)
    assert "different study" in err and "tiny" in err
    assert sorted(os.listdir(results / "tiny")) == before


def test_gpus_asked_on_a_machine_without_gpu_and_bad_metric_exit_2_before_ray(study_file, tmp_path):
    results = tmp_path / "results"
    for changes, expected in [
        ({"resources": {"gpus_per_trial": 0.5}}, "resources.gpus_per_trial"),
        ({"train": {"metric": "val_los"}}, "train.metric: unknown metric 'val_los'"),
    ]:
        done = subprocess.run(
            sweep_command("run", str(study_file(changes)), "--results", str(results)),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not results.exists()


def _processes_tagged(tag: str) -> list[int]:
    """Pids of the processes whose environment holds tag (a driver's Ray inherits it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if tag.encode() in f.read():
                        found.append(int(entry))
            except OSError:  # gone, or not ours
                pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_bad_data_found_while_ray_starts_exits_2_writes_nothing_and_leaves_no_ray(
    study_file, tmp_path
):
    """The data loads while a real local Ray starts (both in the background): Ray did start,
    yet the data error is one line, exit 2, nothing written in the results, and no process of
    that Ray is left (Ray binds its processes' lives to the driver's; this holds it to that)."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n3,,y\n" + "".join(f"{i},{i},x\n" for i in range(40)))
    study = study_file({"data": {"source": str(bad), "target": "label"}})
    results = tmp_path / "results"
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must fit
    tag = f"MLP_SWEEP_TEST_TAG={uuid.uuid4().hex}"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", tag.split("=")[0]: tag}
    env["RAY_TMPDIR"] = ray_tmp
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            sweep_command("run", str(study), "--results", str(results)),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=180,
        )
        assert done.returncode == 2, done.stderr
        assert "bad.csv" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not results.exists()
        sessions = [
            p for p in os.listdir(os.path.join(ray_tmp, "ray")) if p.startswith("session_2")
        ]
        assert len(sessions) == 1  # the error came after a real Ray had started
        deadline = time.monotonic() + 30
        while _processes_tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_tagged(tag) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_checking_a_study_imports_no_torch():
    """`sweep run` checks the study before anything starts; without torch that takes a moment,
    and Ray starts while torch loads (sweep.launch)."""
    code = (
        "import sys\n"
        "from sweep.config import load_study\n"
        "from sweep.launch import RunOptions, study_dir\n"
        "study = load_study('sweep/configs/default.yaml', ['train.epochs=2'])\n"
        "assert study.train.epochs == 2 and study_dir(study, RunOptions()).endswith(study.name)\n"
        "heavy = sorted({'torch', 'pandas', 'ray.tune'} & set(sys.modules))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_sweeps_driver_never_imports_torch_or_sklearn(study_file, tmp_path):
    """The driver loads the data as NumPy arrays and hands Tune a torch-free trial function
    (sweep.trainable): torch and sklearn (about 2 s of imports) stay out of its start-up, and
    the trials, which import torch in their own workers, still train."""
    study = study_file({"train": {"epochs": 1}}, optimizers={"sgd": {"lr": [0.1]}})
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(sorted({'torch', 'sklearn'} & set(sys.modules))))\n"
        "from sweep.__main__ import main\n"
        f"sys.exit(main(['run', {str(study)!r}, '--results', {str(tmp_path / 'r')!r}]))\n"
    )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    trials = pq.read_table(tmp_path / "r" / "tiny" / "trials.parquet").to_pandas()
    assert len(trials) > 0 and (trials.status == "completed").all()


def test_validate_prints_the_trial_count(study_file, capsys):
    assert main(["validate", str(study_file())]) == 0
    assert "2 trials" in capsys.readouterr().out


def wait_for_epochs(journal, at_least: int, timeout_s: float = 240) -> None:
    """Wait until the driver's journal (written at once, unlike the throttled Parquet) holds
    at_least reported epochs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count('"kind": "result"') >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {at_least} reported epochs in {journal} after {timeout_s}s")


def reported_epochs(journal) -> set[tuple[str, int]]:
    """(trial_id, epoch) of every epoch the driver had journaled."""
    events = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return {(e["trial_id"], e["metrics"]["epoch"]) for e in events if e["kind"] == "result"}


@pytest.mark.slow
@pytest.mark.timeout(240 + 120 + 400 + 120 + 60)  # longer than the waits below, added up
@pytest.mark.parametrize("stop", ["ctrl_c", "kill"])
def test_interrupted_sweep_resumes_to_complete_tables_without_duplicates(
    stop, study_file, tmp_path
):
    study = study_file(
        {
            "model": {"hidden": [64]},
            # packed, four configurations train ~10 epochs a second: time for the stop to land
            "train": {"epochs": 150, "checkpoint_every": 2},
            "search": {"batch_size": [8]},
        },
        optimizers={"sgd": {"lr": [0.1, 0.03]}, "adam": {"lr": [0.003, 0.001]}},
    )
    results = tmp_path / "results"
    out = results / "tiny"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        sweep_command("run", str(study), "--results", str(results), "--num-cpus", "2"),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_epochs(out / "journal.jsonl", at_least=6)  # some trial is past its checkpoint
        time.sleep(3)  # and Tune's experiment snapshot (every 2 s) has seen it
        if stop == "ctrl_c":
            proc.send_signal(signal.SIGINT)
        else:
            proc.kill()  # SIGKILL: no handler, no flush
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported = reported_epochs(out / "journal.jsonl")
    before_resume = len(journal(out))
    assert len(reported) >= 6
    left = pq.read_table(out / "epochs.parquet").to_pandas()  # valid Parquet either way
    if stop == "ctrl_c":
        assert proc.returncode == 130, err
        assert "python -m sweep resume" in err
        assert (
            set(zip(left.trial_id, left.epoch, strict=True)) == reported
        )  # flushed on the way out
    else:
        assert proc.returncode == -signal.SIGKILL
    assert len(reported) < 4 * 150  # stopped while trials were running

    done = subprocess.run(
        sweep_command("resume", str(out), "--num-cpus", "2", "-v"),  # -v: Ray's warnings too
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr
    # Neither Tuner.restore nor fit's end looked for the result files Tune never wrote.
    assert "Could not fetch metrics" not in done.stderr
    trials = pq.read_table(out / "trials.parquet").to_pandas()
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    assert len(trials) == 4 and trials.trial_id.is_unique
    assert (trials.status == "completed").all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(zip(epochs.trial_id, epochs.epoch, strict=True)) == sorted(
        (tid, epoch) for tid in trials.trial_id for epoch in range(1, 151)
    )
    assert reported <= set(zip(epochs.trial_id, epochs.epoch, strict=True))  # nothing lost
    # Resumed trials go on from a checkpoint (every 2 epochs), at most the last one reported.
    found = restarts(journal(out), checkpoint_every=2)
    assert all(got <= want and got % 2 == 1 for _, got, want in found), found
    # Some trial went on past the start: re-running from a later checkpoint, or, when the stop
    # came right after a checkpointed epoch that Tune's snapshot holds, re-running nothing.
    first_after = {}
    for event in journal(out)[before_resume:]:
        first_after.setdefault(event["trial_id"], event["epoch"])
    assert any(epoch > 1 for epoch in first_after.values()), (first_after, found)

    status = subprocess.run(
        sweep_command("status", str(out)), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0
    assert "4/4 trials done" in status.stdout and "completed" in status.stdout


def test_console_script_is_the_same_cli():
    script = os.path.join(os.path.dirname(sys.executable), "mlp-sweep")
    done = subprocess.run(
        [script, "validate", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert EXAMPLES["validate"] in done.stdout


def test_the_cli_turns_numpys_huge_pages_off_before_numpy_is_imported():
    """NumPy reads NUMPY_MADVISE_HUGEPAGE once, at import: python -m sweep sets it first (a
    fresh 188 MB array then costs a steady 0.08 s, not 0.02-0.7 s of kernel compaction)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    probe = (
        "import os, sweep.__main__\n"
        "from numpy._core.multiarray import _set_madvise_hugepage\n"
        "print(os.environ['NUMPY_MADVISE_HUGEPAGE'], _set_madvise_hugepage(True))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False"]
