"""A fix for Ray Tune 2.x that a sweep needs: a trial whose reused actor dies is retried.

With ``reuse_actors=True`` Tune hands a finished trial's actor to the next pending trial and
sends it a ``reset`` task while that trial is still PENDING. When the actor's process has died
(killed between trials, its node lost), Tune hears of it twice: the actor's error callback
requeues the trial for a retry (one failure counted), then the ``reset`` task's error callback
finds the trial PENDING and ends it as ERROR, whatever ``max_failures`` says. The second
notice is about the same death and is dropped here. Applied by :func:`apply` (idempotent);
used by ``sweep.runner`` before every ``Tuner.fit``.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)
_APPLIED = "_mlp_sweep_reset_fix"


def apply() -> None:
    """Patch TuneController so a dead reused actor costs its trial one retry, not the trial."""
    from ray.exceptions import RayActorError
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    original = TuneController._trial_task_failure
    if getattr(original, _APPLIED, False):
        return

    @functools.wraps(original)
    def _trial_task_failure(self, trial, exception):
        already_requeued = (
            isinstance(exception, RayActorError)
            and trial.status == Trial.PENDING
            and trial not in self._trial_to_actor
        )
        if already_requeued:  # _actor_failed saw this death first and scheduled the retry
            self._resetting_trials.discard(trial)
            log.debug("dropped a second failure notice for requeued trial %s", trial)
            return None
        return original(self, trial, exception)

    setattr(_trial_task_failure, _APPLIED, True)
    TuneController._trial_task_failure = _trial_task_failure
