"""Issue 11 end to end: trial workers SIGKILLed at random moments, a reused actor killed between
trials, the driver stopped by SIGTERM / SIGHUP and SIGKILLed again and again, two writers, a
stale cluster file. Written against processes, tables and the CLI, so they hold however a trial
trains its configurations."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, TINY_STUDY, merge, sweep_command
from ray import tune

from sweep.config import load_study
from sweep.runner import RunOptions, run_study

pytestmark = pytest.mark.slow


# ---- what every test checks
def journal(out: Path) -> list[dict]:
    """Every epoch the driver journaled, in order (re-run epochs included)."""
    events = []
    for line in (out / "journal.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event["kind"] == "result":
            events.append({"trial_id": event["trial_id"], **event["metrics"]})
    return events


def restarts(events: list[dict], checkpoint_every: int) -> list[tuple[str, int, int]]:
    """(trial, first re-run epoch, epoch it should be) for each time a trial started over: a
    retry or a resume goes on from its last checkpoint, the last reported multiple of
    checkpoint_every (0 if none)."""
    found, last, checkpoint = [], {}, {}
    for e in events:
        tid, epoch = e["trial_id"], e["epoch"]
        if epoch <= last.get(tid, 0):
            found.append((tid, epoch, checkpoint.get(tid, 0) + 1))
        if epoch % checkpoint_every == 0 and e.get("status") == "running":
            checkpoint[tid] = max(checkpoint.get(tid, 0), epoch)
        last[tid] = epoch
    return found


def assert_exact(
    out: Path, n_trials: int, n_epochs: int, checkpoint_every: int, *, resumed: bool = False
) -> list:
    """One row per configuration, all completed, epoch rows 1..n once each, each row the last
    report of its epoch, and every retry started at its last checkpoint, or at the one before:
    Tune (2.60) hands a result to the callbacks (the journal) first and fetches its checkpoint
    from the actor in a separate task, so an actor killed in between is retried from the
    checkpoint before. A resume after a killed driver starts from the checkpoint in Tune's last
    experiment snapshot, which may be one checkpoint behind the last reported: it must start
    just after some checkpoint, no later."""
    trials = pq.read_table(out / "trials.parquet").to_pandas()
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    assert len(trials) == n_trials and trials.trial_id.is_unique
    assert (trials.status == "completed").all(), trials[["trial_id", "status", "error"]]
    assert (trials.epochs_run == n_epochs).all()
    for tid in trials.trial_id:
        assert sorted(epochs.loc[epochs.trial_id == tid, "epoch"]) == list(range(1, n_epochs + 1))
    events = journal(out)
    last_report = {(e["trial_id"], e["epoch"]): e for e in events}
    assert set(last_report) == set(zip(epochs.trial_id, epochs.epoch, strict=True))
    for row in epochs.itertuples():
        report = last_report[(row.trial_id, row.epoch)]
        assert (row.val_loss, row.elapsed_s) == (report["val_loss"], report["elapsed_s"])
    found = restarts(events, checkpoint_every)
    wrong = [
        (tid, got, want)
        for tid, got, want in found
        if (
            (got > want or (got - 1) % checkpoint_every)
            if resumed
            else got not in (want, max(1, want - checkpoint_every))
        )
    ]
    assert not wrong, f"re-runs that did not start from their checkpoint: {wrong}"
    return found


# ---- trial workers killed
def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of process ``root`` (Linux /proc)."""
    parents, commands = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                commands[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier}
        children -= found.keys()
        found.update({pid: commands.get(pid, "") for pid in children})
        frontier = children
    return found


def trial_workers() -> list[int]:
    """This test process's Ray trial actors (busy, starting, or idle between trials)."""
    return [
        pid
        for pid, command in descendants(os.getpid()).items()
        if command.startswith("ray::ImplicitFunc")
    ]


class LastEpoch(tune.Callback):
    """The epoch of the trial each worker process is training (pid -> epoch; 0 once it ended),
    and the first epoch each (trial, process) reported: a retry's process starts after 1 when it
    went on from a checkpoint."""

    def __init__(self) -> None:
        self.by_pid: dict[int, int] = {}
        self.starts: dict[tuple[str, int], int] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # a pack's result holds one record per configuration: it runs while one of them does
        members = result.get("members", [result])
        running = any(m.get("status") == "running" for m in members)
        self.by_pid[result["pid"]] = result["epoch"] if running else 0
        epochs = [m["epoch"] for m in members if m.get("epoch") is not None]
        if epochs:
            self.starts.setdefault((trial.trial_id, result["pid"]), min(epochs))


class RandomKiller(threading.Thread):
    """SIGKILLs a trial worker at random moments until it has killed ``kills`` times: any worker
    (starting, training, idle between trials), and every other time one already past its first
    checkpoint, so that retries from a checkpoint are among the kills."""

    def __init__(self, kills: int, seed: int, progress: LastEpoch, past: int) -> None:
        super().__init__(daemon=True)
        self.kills, self.rng = kills, random.Random(seed)
        self.progress, self.past = progress, past
        self.killed: list[int] = []
        self.done = threading.Event()

    def by_pid(self, pid: int) -> int:
        return self.progress.by_pid.get(pid, 0)

    def run(self) -> None:
        while len(self.killed) < self.kills and not self.done.wait(self.rng.uniform(0.2, 1.5)):
            workers = trial_workers()
            if len(self.killed) % 2:  # wait (a little) for a worker past its checkpoint
                for _ in range(100):
                    workers = [p for p in trial_workers() if self.by_pid(p) > self.past]
                    if workers or self.done.wait(0.05):
                        break
            if workers:
                victim = self.rng.choice(workers)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)
                except ProcessLookupError:
                    pass


def test_trial_workers_killed_at_ten_random_moments_lose_nothing(ray_session, study_file, tmp_path):
    epochs, every = 150, 2  # packed, 8 configurations train fast: long enough for 10 kills
    study = load_study(
        study_file(
            {
                "train": {"epochs": epochs, "checkpoint_every": every, "max_failures": 20},
                "search": {"batch_size": [8], "seeds": 2},
            },
            optimizers={
                "sgd": {"lr": [0.03, 0.01], "momentum": 0.9},
                "adam": {"lr": [0.003, 0.001]},
            },
        )
    )  # 8 configurations; 20 retries each covers every kill
    progress = LastEpoch()
    seed = int(os.environ.get("KILL_SEED", "11"))
    killer = RandomKiller(kills=10, seed=seed, progress=progress, past=every)
    killer.start()
    try:
        summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[progress])
    finally:
        killer.done.set()
        killer.join(timeout=10)
    assert len(killer.killed) >= 10, f"the run ended after {len(killer.killed)} kills"
    assert_exact(Path(summary.out), n_trials=8, n_epochs=epochs, checkpoint_every=every)
    # Some retry went on from a checkpoint, and each that did started right after one. (A pack
    # reports quick epochs together, at its checkpoints, so a retry from the last checkpoint
    # mostly re-reports nothing: the journal alone shows few retries.)
    later = [epoch for epoch in progress.starts.values() if epoch > 1]
    assert later and all((epoch - 1) % every == 0 for epoch in later), progress.starts


class KillReusedActor(tune.Callback):
    """When the first trial ends, SIGKILL its actor, which Tune then hands to a waiting trial."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.victim: str | None = None
        self.recovered: list[str] = []
        self.errored: list[str] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.pids[trial.trial_id] = result["pid"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.victim is None:
            self.victim = trial.trial_id
            os.kill(self.pids[trial.trial_id], signal.SIGKILL)
            time.sleep(1.0)  # dead before Tune resets it for the next trial

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered.append(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errored.append(trial.trial_id)


def test_an_actor_killed_between_trials_costs_the_next_trial_a_retry_not_its_run(
    ray_session, study_file, tmp_path
):
    # 3 one-CPU trials on 2 CPUs: the third waits and gets the first one's actor. Ray Tune 2.60
    # alone ends that trial as error (sweep.tune_fixes), whatever max_failures says.
    study = load_study(
        study_file(
            {
                "train": {"epochs": 2, "checkpoint_every": 1, "max_failures": 1},
                "resources": {"models_per_trial": 1},  # three Tune trials
            },
            optimizers={"sgd": {"lr": [0.1, 0.03]}, "adam": {"lr": [0.01]}},
        )
    )
    probe = KillReusedActor()
    summary = run_study(study, RunOptions(results=str(tmp_path / "r")), callbacks=[probe])
    assert probe.victim is not None and probe.recovered, "no reused actor was killed"
    assert probe.errored == []
    assert_exact(Path(summary.out), n_trials=3, n_epochs=2, checkpoint_every=1)


# ---- the driver stopped or killed
def write_study(path: Path, changes: dict, optimizers: dict) -> Path:
    import yaml

    study = merge(TINY_STUDY, changes)
    study["search"] = {**study["search"], "optimizers": optimizers}
    path.write_text(yaml.safe_dump(study))
    return path


LONG = {
    "model": {"hidden": [64]},
    "train": {"epochs": 40, "checkpoint_every": 2},  # packed, four configurations are quick
    "search": {"batch_size": [8]},
}
FOUR = {"sgd": {"lr": [0.03, 0.01]}, "adam": {"lr": [0.003, 0.001]}}


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    out = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    out.pop("RAY_ADDRESS", None)
    return out


def start(args: list[str], *, group: bool = False, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_command(*args),
        cwd=REPO,
        env=kwargs.pop("env", None) or env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
        **kwargs,
    )


def wait_for_results(out: Path, at_least: int, proc: subprocess.Popen, timeout_s=240) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = out / "journal.jsonl"
        count = path.read_text().count('"kind": "result"') if path.exists() else 0
        if count >= at_least:
            return count
        if proc.poll() is not None:
            raise AssertionError("the sweep ended early:\n" + proc.stderr.read()[-3000:])
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} results after {timeout_s}s")


def finish(proc: subprocess.Popen, timeout_s: float = 120) -> str:
    try:
        return proc.communicate(timeout=timeout_s)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(240 + 120 + 60)  # longer than the waits below, added up
@pytest.mark.parametrize(
    "signum, code, group",
    [(signal.SIGTERM, 143, True), (signal.SIGHUP, 129, False)],
    ids=["SIGTERM-to-the-group", "SIGHUP"],
)
def test_stop_signal_flushes_says_how_to_resume_and_exits_128_plus_signal(
    signum, code, group, tmp_path
):
    study = write_study(tmp_path / "study.yaml", LONG, FOUR)
    out = tmp_path / "r" / "tiny"
    args = ["run", str(study), "--results", str(tmp_path / "r"), "--num-cpus", "2"]
    proc = start(args, group=group)
    wait_for_results(out, 3, proc)
    stopped_at = time.monotonic()
    if group:  # what `timeout` and `ray job stop` do: the whole process group
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    err = finish(proc)
    took = time.monotonic() - stopped_at
    assert proc.returncode == code, err
    assert took < 30, f"{took:.0f}s to stop"  # inside a Kubernetes / Slurm grace period
    assert "SIGTERM received" not in err and "PC: @" not in err and "Traceback" not in err, err
    name = signal.Signals(signum).name
    assert f"stopped by {name}; finish with: python -m sweep resume {out}" in err, err
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    reported = {(e["trial_id"], e["epoch"]) for e in journal(out)}
    assert set(zip(epochs.trial_id, epochs.epoch, strict=True)) == reported  # flushed
    assert len(reported) < 4 * 40  # stopped mid-run
    assert (out / "journal.lock").read_text() == ""  # the lock was released


@pytest.mark.timeout(5 * (240 + 120 + 120) + 400 + 60)  # the waits below, added up
def test_driver_killed_five_times_then_resume_gives_exact_tables(tmp_path):
    """SIGKILL the driver at 5 random points of the run (resume after each); meanwhile a second
    writer is refused, each resume takes over the dead driver's lock with a note, and a damaged
    table and a cut journal line before the last resume are repaired from the journal."""
    rng = random.Random(int(os.environ.get("KILL_SEED", "5")))
    n_epochs = 150  # packed, four configurations train ~10 epochs a second
    study = write_study(tmp_path / "study.yaml", merge(LONG, {"train": {"epochs": n_epochs}}), FOUR)
    results, out = tmp_path / "r", tmp_path / "r" / "tiny"
    first = ["run", str(study), "--results", str(results), "--num-cpus", "2"]
    # kill after these many journaled epochs (of 600), wherever the run then is
    kill_at = sorted(rng.sample(range(2, 100), 5))
    seen, pids = 0, []
    for attempt, at in enumerate(kill_at):
        args = first if attempt == 0 else ["resume", str(out), "--num-cpus", "2"]
        driver = start(args)
        wait_for_results(out, max(at, seen + 1), driver)
        if attempt == 0:  # a second writer while the first holds the directory (held still)
            driver.send_signal(signal.SIGSTOP)
            second = start([*first, "--exist-ok"])
            err = finish(second)
            driver.send_signal(signal.SIGCONT)
            assert second.returncode == 2, err
            assert f"is in use by pid {driver.pid} on host" in err, err
        if attempt == len(kill_at) - 1:
            # The last driver lives past Tune's next experiment snapshot (every 2 s,
            # TUNE_GLOBAL_CHECKPOINT_S), so the snapshot names its trials' checkpoints and the
            # final resume must go on from one. Without this wait whether any snapshot did so
            # was left to timing: a resumed driver is killed right after its first new result.
            time.sleep(2.5)
        time.sleep(rng.uniform(0.0, 0.5))
        driver.kill()
        err = finish(driver)
        seen = len(journal(out))  # the next driver must add to this before it is killed
        if attempt > 0:
            assert f"took over the lock of pid {pids[-1]}" in err, err  # a note on the console
        pids.append(driver.pid)
    assert seen < 4 * n_epochs, "the run ended before the last kill"
    (out / "trials.parquet").write_bytes(b"PAR1 damaged")
    text = (out / "journal.jsonl").read_text()
    (out / "journal.jsonl").write_text(text[:-7])  # the last line cut short
    done = subprocess.run(
        sweep_command("resume", str(out), "--num-cpus", "2"),
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"took over the lock of pid {pids[-1]}" in done.stderr
    assert "skipped 1 damaged line" in done.stderr
    found = assert_exact(out, n_trials=4, n_epochs=n_epochs, checkpoint_every=2, resumed=True)
    assert any(got > 1 for _, got, _ in found), f"no re-run went on from a checkpoint: {found}"


def request_cleanup(path: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)


def test_a_cluster_left_by_ray_start_is_not_joined_without_an_address(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: socket paths are bounded
    request_cleanup(ray_tmp)
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # stale: nothing there
    study = write_study(tmp_path / "study.yaml", {"train": {"epochs": 1}}, {"adam": {"lr": [0.01]}})
    done = subprocess.run(
        sweep_command("run", str(study), "--results", str(tmp_path / "r"), "--num-cpus", "1"),
        cwd=REPO,
        env={**env(), "RAY_TMPDIR": str(ray_tmp)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1/1 configurations done" in done.stderr
