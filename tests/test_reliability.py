"""Issue 11, the parts that need no sweep: RAY_ADDRESS, resources that can never fit, the pending
watch, stop signals, the one-writer lock. The end-to-end kills are in test_reliability_e2e.py."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import types

import pytest
from conftest import REPO, sweep_command

from sweep import launch, pending, signals
from sweep import lock as lock_module
from sweep.__main__ import main
from sweep.cluster import resolve_address
from sweep.lock import ResultsInUseError, results_lock
from sweep.pending import PendingWatch, shortfall


# ---- RAY_ADDRESS
@pytest.mark.parametrize(
    "flag, env, expected",
    [
        (None, None, None),  # a private local Ray
        (None, "", None),
        (None, "local", None),
        (None, "10.0.0.1:6379", "10.0.0.1:6379"),  # what `ray job submit` sets for the driver
        (None, "auto", "auto"),
        ("127.0.0.1:6379", "10.0.0.1:6379", "127.0.0.1:6379"),  # --address wins
        ("local", "10.0.0.1:6379", None),
    ],
)
def test_address_is_the_flag_else_ray_address_else_local(flag, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert resolve_address(flag) == expected


def test_unreachable_ray_address_exits_2_within_seconds_naming_it(study_file, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    done = subprocess.run(
        sweep_command("run", str(study_file())),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert "127.0.0.1:1" in err and "RAY_ADDRESS" in err
    assert took < 60  # not Ray's minute of retries (the run itself takes ~5 s to import)
    assert list(cwd.iterdir()) == []


def test_help_says_how_the_address_is_chosen(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "RAY_ADDRESS" in text and "private local Ray" in text and "--address auto" in text


# ---- resources that can never fit
@pytest.fixture
def no_ray(monkeypatch):
    from sweep import launch

    def refuse(opts):
        raise AssertionError("Ray was started for a study that should have been rejected")

    monkeypatch.setattr(launch, "start_ray", refuse)
    # As in a fresh CLI process: the suite's shared in-process Ray session is not this run's.
    monkeypatch.setattr(launch.ray, "is_initialized", lambda: False)


@pytest.mark.parametrize(
    "resources, args, expected",
    [
        ({"cpus_per_trial": 1000}, [], "resources.cpus_per_trial: a trial needs 1000 CPUs"),
        ({"cpus_per_trial": 4}, ["--num-cpus", "2"], "needs 4 CPUs, but this machine has 2"),
        ({"gpus_per_trial": 2}, ["--num-gpus", "1"], "resources.gpus_per_trial: a trial needs 2"),
        ({"gpus_per_trial": 0.5}, ["--num-gpus", "0"], "resources.gpus_per_trial: 0.5 GPUs asked"),
    ],
)
def test_a_trial_bigger_than_the_machine_exits_2_before_launch(
    resources, args, expected, study_file, tmp_path, capsys, no_ray
):
    results = tmp_path / "results"
    code = main(
        ["run", str(study_file({"resources": resources})), "--results", str(results), *args]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expected in err and len(err.splitlines()) == 1, err
    assert not results.exists()


def test_cpus_per_trial_up_to_the_machine_passes_the_check(study_file, tmp_path, monkeypatch):
    from sweep import launch, runner
    from sweep.config import load_study

    started = []
    monkeypatch.setattr(launch, "start_ray", lambda opts: started.append(opts) or 1 / 0)
    study = load_study(study_file({"resources": {"cpus_per_trial": 2}}))
    with pytest.raises(ZeroDivisionError):
        runner.run_study(study, runner.RunOptions(results=str(tmp_path), num_cpus=2))
    assert started


# ---- the pending watch (a cluster whose nodes are all too small)
def test_shortfall_names_what_no_node_has():
    two_cpu = {"CPU": 2.0, "memory": 1e9}
    gpu_node = {"CPU": 1.0, "GPU": 1.0}
    assert shortfall({"CPU": 2, "GPU": 0}, [two_cpu]) is None
    assert shortfall({"CPU": 4, "GPU": 0}, [two_cpu, gpu_node]) == (
        "waiting for resources: a trial needs 4 CPU, the largest node has 2"
    )
    assert shortfall({"CPU": 1, "GPU": 0.25}, [two_cpu]) == (
        "waiting for resources: a trial needs 0.25 GPU, the largest node has 0"
    )
    assert shortfall({"CPU": 1, "GPU": 0.25}, [two_cpu, gpu_node]) is None
    assert "no node has both" in shortfall({"CPU": 2, "GPU": 1}, [two_cpu, gpu_node])
    assert "no live node" in shortfall({"CPU": 1}, [])


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrial:
    def __init__(self, status):
        self.status = status


def test_pending_watch_notes_then_stops_after_the_timeout(monkeypatch, capsys):
    nodes = [[{"CPU": 2.0}]]
    kills = []
    monkeypatch.setattr(pending.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    clock = Clock()
    watch = PendingWatch(
        {"CPU": 4}, 30, stream=sys.stdout, poll_s=1, nodes=lambda: nodes[0], clock=clock
    )
    waiting = [FakeTrial("PENDING")]
    watch.on_step_end(0, waiting)
    assert watch.note == "waiting for resources: a trial needs 4 CPU, the largest node has 2"
    assert capsys.readouterr().out.strip() == watch.note  # said once, at once
    clock.now = 29.5
    watch.on_step_end(0, waiting)
    assert not watch.timed_out and kills == []
    clock.now = 30.5
    watch.on_step_end(0, waiting)
    assert watch.timed_out and kills == [(os.getpid(), signal.SIGINT)]  # Tune's graceful stop
    message = str(watch.error("results/x"))
    assert "needs 4 CPU" in message and "python -m sweep resume results/x" in message
    assert "\n" not in message


def test_pending_watch_forgets_when_a_big_enough_node_joins(monkeypatch):
    nodes = [[{"CPU": 2.0}]]
    monkeypatch.setattr(pending.os, "kill", lambda pid, sig: pytest.fail("stopped the run"))
    clock = Clock()
    watch = PendingWatch({"CPU": 4}, 30, poll_s=1, nodes=lambda: nodes[0], clock=clock)
    waiting = [FakeTrial("PENDING")]
    watch.on_step_end(0, waiting)
    clock.now = 20
    nodes[0] = [{"CPU": 2.0}, {"CPU": 8.0}]  # the autoscaler added a node
    watch.on_step_end(0, waiting)
    assert watch.note is None and watch.since is None
    clock.now = 40
    nodes[0] = [{"CPU": 2.0}]  # and lost it again: the clock starts over
    watch.on_step_end(0, waiting)
    clock.now = 65
    watch.on_step_end(0, waiting)
    assert watch.note and not watch.timed_out
    clock.now = 80
    watch.on_step_end(0, [FakeTrial("RUNNING")])  # nothing waits: nothing to say
    assert watch.note is None


def test_pending_watch_with_timeout_0_waits_for_ever(monkeypatch):
    monkeypatch.setattr(pending.os, "kill", lambda pid, sig: pytest.fail("stopped the run"))
    clock = Clock()
    watch = PendingWatch({"CPU": 4}, 0, poll_s=1, nodes=lambda: [{"CPU": 1.0}], clock=clock)
    for clock.now in (0, 1e6):
        watch.on_step_end(0, [FakeTrial("PENDING")])
    assert watch.note and not watch.timed_out


# ---- stop signals
@pytest.fixture
def armed():
    signals.arm()
    yield
    signals.disarm()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_is_a_keyboard_interrupt_with_its_own_exit_code(armed, signum, code):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs at the next bytecode
    assert signals.received() == signum and signals.exit_code(130) == code


def test_a_stop_signal_goes_to_the_current_sigint_handler(armed):
    seen = []
    previous = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))  # as Tune's does
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert signals.describe() == "SIGTERM" and signals.exit_code(130) == 143


def test_no_signal_keeps_the_default_exit_code():
    assert signals.received() is None and signals.exit_code(130) == 130


# ---- one writer per results directory
HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from sweep.lock import results_lock
with results_lock({path!r}, "results/x"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    path = str(tmp_path / "journal.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(repo=str(REPO), path=path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsInUseError) as info, results_lock(path, "results/x"):
            pass
        message = str(info.value)
        assert f"pid {holder.pid} on host" in message and "results/x is in use" in message
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing (SIGKILL): the next run takes over, with a note
    with results_lock(path, "results/x") as previous:
        assert previous["pid"] == holder.pid
        assert json.loads(open(path).read())["pid"] == os.getpid()
    assert open(path).read() == ""  # released cleanly


def test_taking_over_a_dead_holders_lock_is_logged(tmp_path, caplog):
    path = tmp_path / "journal.lock"
    path.write_text(json.dumps({"host": "h", "pid": 999999, "started": "T"}))
    with caplog.at_level(logging.WARNING, logger="sweep.lock"), results_lock(str(path), "r"):
        pass
    assert "took over the lock of pid 999999 on host h (started T)" in caplog.text
    with caplog.at_level(logging.WARNING, logger="sweep.lock"), results_lock(str(path), "r"):
        pass
    assert caplog.text.count("took over") == 1  # a clean release leaves nothing to take over


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    path = str(tmp_path / "journal.lock")
    with pytest.raises(RuntimeError), results_lock(path, "r"):
        raise RuntimeError("the run failed")
    with results_lock(path, "r") as previous:
        assert previous is None
    assert lock_module.describe({"pid": 1, "host": "h", "started": "T"}) == (
        "pid 1 on host h (started T)"
    )


HUNG = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
os.environ["MLP_SWEEP_STOP_GRACE_S"] = "1"
from sweep import signals
signals.arm()
signals.at_forced_exit(lambda: print("flushed", flush=True))
signal.signal(signal.SIGINT, lambda s, f: None)  # a stop that never ends: Ray is gone
print("ready", flush=True)
time.sleep(60)
"""


def test_a_stop_that_hangs_ends_after_the_grace_period_with_the_cleanups(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HUNG.format(repo=str(REPO))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and out.strip() == "flushed"


# ---- a quick exit that still runs what an exit runs
QUICK_EXIT = """
import atexit, sys, threading, time
sys.path.insert(0, {repo!r})
from sweep import signals
atexit.register(lambda: open({marker!r}, "w").write("atexit ran"))
if {busy}:  # a non-daemon thread still working: the exit waits for it, as Python's does
    threading.Thread(target=lambda: (time.sleep(1), print("thread done"))).start()
sys.stdout.write("no newline, still flushed")
sys.stderr.write("to stderr")
signals.exit_process(3)
print("never printed")
"""


@pytest.mark.parametrize("busy", [False, True])
def test_exit_process_runs_atexit_flushes_and_keeps_the_code(busy, tmp_path):
    marker = tmp_path / "marker"
    source = QUICK_EXIT.format(repo=str(REPO), marker=str(marker), busy=busy)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 3
    assert marker.read_text() == "atexit ran"
    assert done.stdout.startswith("no newline, still flushed") and "never" not in done.stdout
    assert done.stdout.endswith("thread done\n") == busy
    assert done.stderr == "to stderr"


def test_the_local_rays_autoscaler_monitor_is_ended_before_shutdown(monkeypatch):
    """ray.shutdown waits a second for a monitor that no longer reaches the GCS; it is ended
    first (and only the monitor: the other processes are Ray's to stop)."""
    import ray

    from sweep import launch

    monitor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        node = types.SimpleNamespace(
            all_processes={
                "monitor": [types.SimpleNamespace(process=monitor)],
                "raylet": [types.SimpleNamespace(process=other)],
            }
        )
        monkeypatch.setattr(ray._private.worker, "_global_node", node)
        launch._end_autoscaler_monitor()
        assert monitor.poll() is not None and other.poll() is None
        launch._end_autoscaler_monitor()  # already ended: nothing to do
    finally:
        for process in (monitor, other):
            process.kill()
            process.wait()


LOCAL_RAY_PROBE = """
import json
import ray
from ray._private import node, services
from ray.core.generated.gcs_pb2 import GcsNodeInfo
from sweep import launch

ray_get_node, registered = services.get_node, []


def get_node(gcs_address, node_id):  # Ray's own wait (1 s between tries): the node is there
    nodes = ray._raylet.GcsClient(address=gcs_address).get_all_node_info(timeout=5)
    registered.append(any(i.state == GcsNodeInfo.ALIVE for i in nodes.values()))
    return ray_get_node(gcs_address, node_id)


services.get_node = get_node
original, seen = node.Node, {}
for verbose in (False, True):
    launch._init_ray(launch.RunOptions(num_cpus=1, verbose=verbose))
    seen[verbose] = {
        "registered_before_rays_wait": registered[:] == [True],
        "processes": sorted(ray._private.worker._global_node.all_processes),
        "config": ray._private.state.state.get_system_config(),
        "node_class_restored": node.Node is original,
        "works": ray.get(ray.put(7)) == 7,
    }
    ray.shutdown()
    registered.clear()
print(json.dumps(seen))
"""


def test_a_local_ray_starts_only_the_processes_a_sweep_uses():
    """No dashboard head (ray.init would wait for it), no autoscaler monitor, and a log monitor
    only when worker output goes to the driver (--verbose); the raylet retries its object store
    ten times a second (the same patience as Ray's one try a second, ten times), and has
    registered before Ray's own wait for it (which sleeps a second between tries) begins. A
    fresh process: the suite's own Ray session is not one the sweep started."""
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["false"]["processes"] == ["gcs_server", "raylet"]
    assert seen["true"]["processes"] == ["gcs_server", "log_monitor", "raylet"]
    for run in seen.values():
        assert run["node_class_restored"] and run["works"] and run["registered_before_rays_wait"]
        assert run["config"]["raylet_client_connect_timeout_milliseconds"] == 100
        assert run["config"]["raylet_client_num_connect_attempts"] == 100
        assert run["config"]["task_events_report_interval_ms"] == 0  # no dashboard to show them


def test_a_local_ray_with_a_dashboard_keeps_its_task_events():
    config = launch.local_system_config(launch.RunOptions(dashboard=True))
    assert config == launch.LOCAL_SYSTEM_CONFIG and "task_events_report_interval_ms" not in config


class NodeId(str):
    def hex(self) -> str:
        return str(self)


class FakeNodeForWait:
    """A just-started local node for launch._await_raylet: its GCS answers from a script."""

    node_id = "ab" * 28

    def __init__(self, answers, raylet_exit_code=None):
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        self.answers, self.calls = list(answers), 0
        self.ALIVE, self.DEAD = GcsNodeInfo.ALIVE, GcsNodeInfo.DEAD
        process = types.SimpleNamespace(poll=lambda: raylet_exit_code)
        self.all_processes = {"raylet": [types.SimpleNamespace(process=process)]}

    def get_gcs_client(self):
        return self

    def get_all_node_info(self, timeout):
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return {NodeId(node_id): types.SimpleNamespace(state=state) for node_id, state in answer}


def test_awaiting_the_raylet_asks_the_gcs_until_this_node_is_alive():
    from sweep import launch

    other = ("cd" * 28, 0)
    fake = FakeNodeForWait([])
    fake.answers = [
        ConnectionError("GCS not up yet"),
        [],
        [other],
        [(fake.node_id, fake.DEAD)],
        [other, (fake.node_id, fake.ALIVE)],
        [],
    ]
    launch._await_raylet(fake, timeout_s=30)
    assert fake.calls == 5  # returned at the first answer with this node alive


@pytest.mark.parametrize("raylet_exit_code, timeout_s, most_calls", [(1, 30, 0), (None, 0.2, 20)])
def test_awaiting_the_raylet_gives_up_when_it_exits_or_at_the_timeout(
    raylet_exit_code, timeout_s, most_calls
):
    """Ray's own wait then decides (and raises its own error): nothing is raised here."""
    from sweep import launch

    fake = FakeNodeForWait([[]], raylet_exit_code=raylet_exit_code)
    started = time.monotonic()
    launch._await_raylet(fake, timeout_s=timeout_s)
    assert fake.calls <= most_calls and time.monotonic() - started < timeout_s + 5


def test_an_error_starting_ray_in_the_background_is_raised_where_the_session_begins(
    monkeypatch,
):
    from sweep import launch

    def fail(opts):
        raise ValueError("ray.init refused")

    monkeypatch.setattr(launch, "_init_ray", fail)
    monkeypatch.setattr(launch.ray, "is_initialized", lambda: False)  # not the suite's session
    opts = launch.RunOptions()
    starting = launch.start_ray(opts)
    assert isinstance(starting, launch.RayStart)
    entered = []
    with pytest.raises(ValueError, match="ray.init refused"):
        with launch.ray_session(opts, starting):
            entered.append(True)
    assert entered == []
