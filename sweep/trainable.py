"""What the driver hands Ray Tune: the trial function, and the data as plain arrays, without torch.

The driver only passes the trial function to Tune and the arrays to Ray's object store. Importing
``sweep.trial`` there (torch and the training code) cost about 1.1 s of every sweep's start-up,
on the way to the first trial; now each trial's worker imports it at its first call.
"""

from __future__ import annotations

from model.data import SPLITS, Arrays


def payload_of(arrays: Arrays) -> dict:
    """The arrays and what names them, for Ray's object store (zero-copy on the node)."""
    fields = {name: getattr(arrays, name) for name in SPLITS}
    return {**fields, "name": arrays.name, "task": arrays.task, "classes": tuple(arrays.classes)}


def run_pack(config: dict, payload: dict | None = None) -> None:
    """The Tune trial function: sweep.trial.run_pack, imported in the trial's worker."""
    from sweep import trial

    trial.run_pack(config, payload)
