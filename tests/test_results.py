"""sweep.results.ResultsWriter on its own: rows, re-run epochs, journal replay, damaged journals
and tables, Parquet reload. No Ray."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from model.errors import ConfigError
from sweep import results as results_module
from sweep import storage
from sweep.results import EPOCHS_SCHEMA, ResultsWriter, trials_schema

HP = {"momentum": float}
SGD = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "seed": 0, "optimizer_params": {}}
ADAM = {"optimizer": "adam", "lr": 0.01, "batch_size": 16, "seed": 1, "optimizer_params": {}}
SGD_M = {**SGD, "lr": 0.03, "optimizer_params": {"momentum": 0.9}}


def metrics(epoch: int, val_loss: float, **extra) -> dict:
    return {
        "epoch": epoch,
        "train_loss": val_loss + 0.1,
        "val_loss": val_loss,
        "val_acc": 1 - val_loss / 10,
        "val_rmse": None,
        "epoch_time_s": 0.5,
        "samples_per_s": 100.0 * epoch,
        "steps": 10 * epoch,
        "elapsed_s": 0.5 * epoch,
        "status": "running",
        "node_id": "n1",
        "device": "cpu",
        "gpu_fraction": 0.0,
        **extra,
    }


def writer(tmp_path, **kwargs) -> ResultsWriter:
    kwargs.setdefault("journal", str(tmp_path / "journal.jsonl"))
    kwargs.setdefault("flush_interval_s", 3600)
    return ResultsWriter(str(tmp_path), hp_columns=HP, metric="val_loss", mode="min", **kwargs)


def read(tmp_path):
    return (
        pq.read_table(tmp_path / "trials.parquet").to_pandas().set_index("trial_id"),
        pq.read_table(tmp_path / "epochs.parquet").to_pandas(),
    )


def journal_events(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]


def test_rows_statuses_best_and_final_values(tmp_path):
    w = writer(tmp_path)
    for epoch, loss in [(1, 0.9), (2, 0.4), (3, 0.6)]:
        w.on_result("a", SGD_M, metrics(epoch, loss, test_acc=0.8 if epoch == 3 else None))
    w.on_result("b", ADAM, metrics(1, 0.7))
    w.on_end("a", SGD_M, "completed")
    w.on_end("b", ADAM, "error", "ActorDiedError: boom")
    w.close()
    trials, epochs = read(tmp_path)
    assert pq.read_schema(tmp_path / "trials.parquet").equals(trials_schema(HP))
    assert pq.read_schema(tmp_path / "epochs.parquet").equals(EPOCHS_SCHEMA)
    a, b = trials.loc["a"], trials.loc["b"]
    assert (a.status, a.epochs_run, a.best_epoch) == ("completed", 3, 2)
    assert (a.best_val_loss, a.final_val_loss, a.final_train_loss) == (0.4, 0.6, 0.7)
    assert a.hp_momentum == 0.9 and a.steps == 30 and a.train_time_s == 1.5
    assert a.samples_per_s == pytest.approx(200.0) and a.test_acc == 0.8
    assert (b.status, b.error, b.epochs_run) == ("error", "ActorDiedError: boom", 1)
    assert b.hp_momentum != b.hp_momentum  # NaN: adam has no momentum
    assert b.test_acc != b.test_acc  # test metrics only for completed trials
    assert sorted(zip(epochs.trial_id, epochs.epoch, strict=True)) == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1)
    ]  # fmt: skip
    assert w.best("val_loss", "min") == "val_loss 0.4 (sgd lr=0.03 bs=16)"
    assert w.statuses() == {"a": "completed", "b": "error"}


def test_a_rerun_epoch_replaces_its_first_report_and_both_are_journaled(tmp_path):
    w = writer(tmp_path)
    for epoch in (1, 2, 3):
        w.on_result("a", SGD, metrics(epoch, 1.0 / epoch))
    # retried from the checkpoint of epoch 2: epoch 3 again, with other numbers, then 4
    w.on_result("a", SGD, metrics(3, 0.2, epoch_time_s=9.0))
    w.on_result("a", SGD, metrics(4, 0.1))
    w.on_end("a", SGD, "completed")
    w.close()
    trials, epochs = read(tmp_path)
    assert list(epochs.epoch) == [1, 2, 3, 4] and trials.loc["a"].epochs_run == 4
    third = epochs[epochs.epoch == 3].iloc[0]
    assert (third.val_loss, third.epoch_time_s) == (0.2, 9.0)  # the later report wins
    reports = [e for e in journal_events(tmp_path) if e["kind"] == "result"]
    assert [e["metrics"]["epoch"] for e in reports] == [1, 2, 3, 3, 4]  # the journal keeps all


def test_error_status_survives_a_late_result_and_on_end_rejects_running(tmp_path):
    w = writer(tmp_path)
    w.on_result("a", SGD, metrics(1, 0.5))
    w.on_end("a", SGD, "error", "died")
    w.on_result("a", SGD, metrics(2, 0.4))  # a straggler result after the error
    assert w.status_of("a") == "error"
    with pytest.raises(ValueError, match="not a terminal status"):
        w.on_end("a", SGD, "running")


class Clock:
    """sweep.results' time.monotonic, moved by hand; each table write can take `write_s`."""

    def __init__(self, monkeypatch) -> None:
        self.now, self.write_s, self.writes = 1000.0, 0.0, 0
        monkeypatch.setattr(results_module, "time", SimpleNamespace(monotonic=lambda: self.now))
        real = storage.write_parquet_atomic

        def write(table, uri) -> None:
            real(table, uri)
            self.writes += 1
            self.now += self.write_s

        monkeypatch.setattr(storage, "write_parquet_atomic", write)


def test_ends_and_results_reach_the_tables_at_the_flush_interval_and_batches_whole(
    tmp_path, monkeypatch
):
    clock = Clock(monkeypatch)
    w = writer(tmp_path, flush_interval_s=10)
    w.on_result("a", SGD, metrics(1, 0.5))  # the first event is written at once
    assert read(tmp_path)[0].status.to_dict() == {"a": "running"}
    clock.now += 1
    w.on_end("a", SGD, "completed")  # journaled at once; the tables wait for the interval
    assert [e["kind"] for e in journal_events(tmp_path)] == ["result", "end"]
    w.maybe_flush()
    assert read(tmp_path)[0].status.to_dict() == {"a": "running"}
    clock.now += 9
    w.maybe_flush()  # what the sweep calls every step of Tune's loop
    assert read(tmp_path)[0].status.to_dict() == {"a": "completed"}
    writes = clock.writes
    w.maybe_flush()  # nothing new: nothing written
    assert clock.writes == writes

    clock.now += 10
    with w.batch():
        for tid, point in (("b", ADAM), ("c", SGD_M)):
            w.on_result(tid, point, metrics(1, 0.4))
            w.on_end(tid, point, "diverged" if tid == "b" else "completed")
        with w.batch():  # nested: only the outermost batch writes
            w.on_result("d", SGD, metrics(1, 0.3))
            w.on_end("d", SGD, "completed")
        w.maybe_flush()
        assert set(read(tmp_path)[0].index) == {"a"}  # never in the middle of a batch...
        ends = [e["trial_id"] for e in journal_events(tmp_path) if e["kind"] == "end"]
        assert ends == ["a", "b", "c", "d"]  # ...but every end is journaled at once
    statuses = read(tmp_path)[0].status.to_dict()
    assert statuses == {"a": "completed", "b": "diverged", "c": "completed", "d": "completed"}
    assert clock.writes == writes + 2  # one rewrite of both tables for the whole batch


def test_a_slow_rewrite_spaces_the_next_ones_out(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    clock.write_s = 3.0  # each table: a rewrite of both takes 6 s
    w = writer(tmp_path, flush_interval_s=10)
    w.on_result("a", SGD, metrics(1, 0.5))
    clock.now += 10
    w.on_end("a", SGD, "completed")
    assert read(tmp_path)[0].status.to_dict() == {"a": "running"}  # 6 s x FLUSH_COST_FACTOR
    clock.now += 6 * results_module.FLUSH_COST_FACTOR - 10
    w.maybe_flush()
    assert read(tmp_path)[0].status.to_dict() == {"a": "completed"}


def test_a_batch_that_raises_is_closed_and_close_writes_everything(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    w = writer(tmp_path, flush_interval_s=10)
    w.on_result("a", SGD, metrics(1, 0.5))  # the first result is written at once
    with pytest.raises(RuntimeError), w.batch():
        w.on_result("b", ADAM, metrics(1, 0.5))
        raise RuntimeError("a listener failed")
    assert set(read(tmp_path)[0].index) == {"a"}
    clock.now += 10
    w.maybe_flush()  # the batch is over: the interval applies again
    assert read(tmp_path)[0].status.to_dict() == {"a": "running", "b": "running"}
    w.on_end("a", SGD, "completed")
    w.close()  # whatever the interval
    assert read(tmp_path)[0].status.to_dict() == {"a": "completed", "b": "running"}


def test_replay_rebuilds_the_same_tables_without_rewriting_the_journal(tmp_path):
    first = writer(tmp_path)
    for epoch in (1, 2):
        first.on_result("a", SGD, metrics(epoch, 0.5 / epoch))
    first.on_result("b", ADAM, metrics(1, 0.3))
    first.on_end("a", SGD, "completed")
    first.close()
    before = (tmp_path / "journal.jsonl").read_text()
    expected = read(tmp_path)

    second = writer(tmp_path)
    assert second.replay_journal() == 4
    assert (tmp_path / "journal.jsonl").read_text() == before  # replay appends nothing
    second.flush()
    trials, epochs = read(tmp_path)
    assert trials.equals(expected[0]) and epochs.equals(expected[1])
    assert second.statuses() == {"a": "completed", "b": "running"}


def test_truncated_last_line_is_skipped_with_a_warning_and_the_next_event_kept(tmp_path, caplog):
    w = writer(tmp_path)
    w.on_result("a", SGD, metrics(1, 0.5))
    w.on_result("a", SGD, metrics(2, 0.4))
    w.close()
    path = tmp_path / "journal.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # power loss in the middle of the last line

    resumed = writer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sweep.results"):
        assert resumed.replay_journal() == 1
    assert "skipped 1 damaged line" in caplog.text
    resumed.on_result("a", SGD, metrics(2, 0.4))  # the resumed run reports epoch 2 again
    resumed.on_result("a", SGD, metrics(3, 0.3))
    resumed.close()

    third = writer(tmp_path)
    assert third.replay_journal() == 3  # the events after the cut line are whole
    third.flush()
    assert list(read(tmp_path)[1].epoch) == [1, 2, 3]


def test_load_parquet_restores_rows_statuses_and_points(tmp_path):
    w = writer(tmp_path, journal=None)
    w.on_result("a", SGD_M, metrics(1, 0.5, test_loss=0.45))
    w.on_end("a", SGD_M, "completed")
    w.on_result("b", ADAM, metrics(1, 0.6))
    w.close()
    expected = read(tmp_path)

    again = writer(tmp_path, journal=None)
    assert again.load_parquet() == 2
    assert again.statuses() == {"a": "completed", "b": "running"}
    again.on_result("b", ADAM, metrics(2, 0.2))
    again.on_end("b", ADAM, "completed")
    again.close()
    trials, epochs = read(tmp_path)
    assert trials.loc["a"].equals(expected[0].loc["a"])  # hp_momentum, test_loss kept
    assert trials.loc["b"].epochs_run == 2 and trials.loc["b"].best_val_loss == 0.2
    assert len(epochs) == 3


def test_load_parquet_of_a_damaged_table_is_one_error_line(tmp_path):
    w = writer(tmp_path, journal=None)
    w.on_result("a", SGD, metrics(1, 0.5))
    w.close()
    (tmp_path / "epochs.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError) as info:
        writer(tmp_path, journal=None).load_parquet()
    message = str(info.value)
    assert "epochs.parquet is damaged" in message and "\n" not in message


def test_load_parquet_without_tables_loads_nothing(tmp_path):
    assert writer(tmp_path, journal=None).load_parquet() == 0


def test_best_epoch_for_a_max_metric_takes_the_earliest_of_equal_bests(tmp_path):
    w = ResultsWriter(str(tmp_path), hp_columns={}, metric="val_acc", mode="max")
    for epoch, acc in [(1, 0.5), (2, 0.9), (3, 0.9), (4, float("nan")), (5, 0.7)]:
        w.on_result("a", SGD, {**metrics(epoch, 0.5), "val_acc": acc})
    w.on_result("b", ADAM, {**metrics(1, 0.5), "val_acc": float("nan")})
    rows = {row["trial_id"]: row for row in w.trials_table().to_pylist()}
    assert rows["a"]["best_epoch"] == 2 and rows["a"]["best_val_acc"] == 0.9
    assert rows["b"]["best_epoch"] is None and rows["b"]["best_val_acc"] is None
    assert w.best("val_acc", "max") == "val_acc 0.9 (sgd lr=0.1 bs=16)"


def test_best_epoch_for_a_min_metric_takes_the_earliest_of_equal_bests(tmp_path):
    w = writer(tmp_path)
    for epoch, loss in [(1, 0.5), (2, 0.2), (3, 0.2), (4, 0.3)]:
        w.on_result("a", SGD, metrics(epoch, loss))
    assert w.trials_table().to_pylist()[0]["best_epoch"] == 2


def test_last_metrics_are_the_latest_report(tmp_path):
    w = writer(tmp_path)
    assert w.last_metrics("a") == {}
    w.on_result("a", SGD, metrics(1, 0.5))
    w.on_result("a", SGD, metrics(2, 0.4, status="completed"))
    last = w.last_metrics("a")
    assert (last["epoch"], last["status"]) == (2, "completed")
    last["epoch"] = 99  # a copy: the writer's record stays as it was
    assert w.last_metrics("a")["epoch"] == 2


def test_a_trial_that_failed_before_reporting_gets_a_row_and_replays(tmp_path):
    w = writer(tmp_path)
    w.on_end("a", SGD_M, "error", "RuntimeError: no CUDA")
    w.close()
    trials, epochs = read(tmp_path)
    row = trials.loc["a"]
    assert (row.status, row.error, row.epochs_run, row.hp_momentum) == (
        "error", "RuntimeError: no CUDA", 0, 0.9
    )  # fmt: skip
    assert len(epochs) == 0
    again = writer(tmp_path)
    assert again.replay_journal() == 1
    again.flush()
    assert read(tmp_path)[0].loc["a"].error == "RuntimeError: no CUDA"  # the message survives


def test_every_damaged_line_is_counted(tmp_path, caplog):
    w = writer(tmp_path)
    w.on_result("a", SGD, metrics(1, 0.5))
    w.close()
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"kind": "res\n{not json}\n')
    with caplog.at_level(logging.WARNING, logger="sweep.results"):
        assert writer(tmp_path).replay_journal() == 1
    assert "skipped 2 damaged line(s)" in caplog.text and "journal.jsonl" in caplog.text


@pytest.mark.parametrize("end", ["completed", "diverged", "early_stopped"])
def test_a_lost_end_line_is_recovered_from_the_last_result(tmp_path, end):
    """A configuration's last result says how it ended: a journal cut before its end line (or
    a pack whose Tune trial ended already) still gives the status."""
    w = writer(tmp_path)
    w.on_result("a", SGD, metrics(1, 0.9))
    w.on_result("a", SGD, metrics(2, 0.5, status=end))
    w.close()  # no on_end: its line never reached the journal
    replayed = writer(tmp_path)
    replayed.replay_journal()
    assert replayed.statuses() == {"a": end}
    running = writer(tmp_path, journal=None)
    running.on_result("b", ADAM, metrics(1, 0.9))
    assert running.statuses() == {"b": "running"}
