"""Five fixes for Ray Tune 2.x that a sweep needs, applied by :func:`apply` (idempotent), which
``sweep.runner`` calls before every ``Tuner.fit`` (and ``Tuner.restore``).

A trial whose reused actor dies is retried.

With ``reuse_actors=True`` Tune hands a finished trial's actor to the next pending trial and
sends it a ``reset`` task while that trial is still PENDING. When the actor's process has died
(killed between trials, its node lost), Tune hears of it twice: the actor's error callback
requeues the trial for a retry (one failure counted), then the ``reset`` task's error callback
finds the trial PENDING and ends it as ERROR, whatever ``max_failures`` says. The second
notice is about the same death and is dropped here.

Tune's start no longer imports every logger integration. Before any trial starts, ``tune.run``
tags its usage telemetry with the callbacks' class names, and to tell its own callbacks from
others it imports the MLflow, Weights & Biases, Comet and Aim integrations: with mlflow installed
(``pip install mlp-sweep[mlflow]``) that import alone held every sweep's first trial back by
0.75-1 s (traced, from ``Tuner.fit``'s start to the first trial's). The tag only counts callback
classes for Ray's usage statistics; it is skipped here (where this Ray has it), nothing else of
Tune's changes.

Tune no longer looks for result files that were never written. At the end of ``fit`` (and in
``Tuner.restore``) Tune's ``ExperimentAnalysis`` reads every trial's ``result.json`` or
``progress.csv`` into a DataFrame. A sweep turns those file loggers off
(``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``; its results are the Parquet tables) and reads no
DataFrame of Tune's, so each trial cost two lookups in the results storage for nothing, and a
warning that listed every trial as "Could not fetch metrics" (seen with ``-v``). On S3 storage a
lookup is a request: measured against moto's S3 server on loopback, 51 trials made 102 lookups
in 0.57 s; a thousand-trial study on a real bucket would wait tens of seconds. While the loggers
are off each trial now gets an empty DataFrame, as Tune gives a trial that reported nothing; with
them on (``--tensorboard``) Tune reads its files as before.

Tune no longer copies a whole grid for each variant it makes of it. To make each trial's config
Tune deep-copies the search space and then puts the trial's grid value in place of the
``grid_search`` entry, so each trial copied the whole list of packs, only to drop the copy:
quadratic in the number of packs. With one configuration per trial, a 2,000-configuration study
spent 24 s of its 82 s there (12 ms a copy), and 10,000 would spend 10 minutes. The copy now
leaves out the ``grid_search`` entries it is about to replace; everything else is Tune's (the
same specs come out, tested against Tune's own generator).

Tune reads its trainable from Ray's key-value store once, not five times a trial. For every
trial Tune looks its trainable up in its registry three times (``contains``) and loads it twice
(``get``, an unpickling), each a round trip to Ray's GCS: 4.4 s of a 22.4 s run of 1,000
configurations, one per trial. What a fit has read is kept for that fit (``apply`` starts each
fit, or resume, afresh, and any registration or removal forgets everything), so each later read
is the same value Tune read the first time. A key that is not there is asked for every time.
"""

from __future__ import annotations

import copy
import functools
import logging
import os

log = logging.getLogger(__name__)
_APPLIED = "_mlp_sweep_reset_fix"


def apply() -> None:
    """Patch TuneController so a dead reused actor costs its trial one retry, not the trial,
    skip the callback usage tag, fetch no result files while Tune writes none, and copy no grid
    for each variant of it, and read Tune's registry once per key and fit (see the module's
    note)."""
    _retry_after_a_dead_reused_actor()
    _skip_callback_usage_tag()
    _skip_unwritten_result_files()
    _no_copies_of_grids()
    _registry_reads_once()
    _REGISTRY_VALUES.clear()  # a new fit may be a new Ray session: read everything again
    _REGISTRY_KNOWN.clear()


def _replace(owner, name: str, make) -> None:
    """Set ``owner.name`` to ``make(original)``, once: the replacement is marked as applied and
    wraps the original (``__wrapped__``)."""
    original = getattr(owner, name)
    if getattr(original, _APPLIED, False):
        return
    replacement = functools.wraps(original)(make(original))
    setattr(replacement, _APPLIED, True)
    setattr(owner, name, replacement)


def _retry_after_a_dead_reused_actor() -> None:
    from ray.exceptions import RayActorError
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    def make(original):
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

        return _trial_task_failure

    _replace(TuneController, "_trial_task_failure", make)


def _skip_callback_usage_tag() -> None:
    try:
        from ray.air._internal import usage
    except ImportError:  # a Ray without this telemetry module
        return
    if not hasattr(usage, "tag_callbacks"):
        return

    def make(original):
        def tag_callbacks(callbacks) -> bool:
            return False  # "no usage recorded", as Tune's own answer for no callbacks

        return tag_callbacks

    _replace(usage, "tag_callbacks", make)


def _skip_unwritten_result_files() -> None:
    from ray.tune.analysis.experiment_analysis import DataFrame, ExperimentAnalysis

    def make(original):
        def _fetch_trial_dataframes(self):
            # Tune's own test for its file loggers (ray.tune.utils.callback, Ray 2.60).
            if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") == "1":
                return {trial.trial_id: DataFrame() for trial in self.trials}
            return original(self)

        return _fetch_trial_dataframes

    _replace(ExperimentAnalysis, "_fetch_trial_dataframes", make)


def _no_copies_of_grids() -> None:
    from ray.tune.search import variant_generator

    def make(original):
        def _grid_search_generator(unresolved_spec, grid_vars):
            """Tune's generator (Ray 2.60) with one change: each variant's deep copy of the
            spec takes the ``grid_search`` entries as they are (a deepcopy memo), since
            assign_value replaces each of them at once with one of its values (the value
            itself, as Tune's own does)."""
            value_indices = [0] * len(grid_vars)

            def increment(i):
                value_indices[i] += 1
                if value_indices[i] >= len(grid_vars[i][1]):
                    value_indices[i] = 0
                    if i + 1 < len(value_indices):
                        return increment(i + 1)
                    return True
                return False

            if not grid_vars:
                yield unresolved_spec
                return

            grids = [variant_generator._get_value(unresolved_spec, path) for path, _ in grid_vars]
            while value_indices[-1] < len(grid_vars[-1][1]):
                spec = copy.deepcopy(unresolved_spec, {id(grid): grid for grid in grids})
                for i, (path, values) in enumerate(grid_vars):
                    variant_generator.assign_value(spec, path, values[value_indices[i]])
                yield spec
                if increment(0):
                    break

        return _grid_search_generator

    _replace(variant_generator, "_grid_search_generator", make)


# (registry prefix, category, key) -> what Tune's registry gave, or that it has the key.
_REGISTRY_VALUES: dict[tuple[str, str, str], object] = {}
_REGISTRY_KNOWN: set[tuple[str, str, str]] = set()


def _registry_reads_once() -> None:
    from ray.experimental.internal_kv import _internal_kv_initialized
    from ray.tune.registry import _Registry

    def make_get(original):
        def get(self, category, key):
            if not _internal_kv_initialized():  # Tune's local table, no round trip
                return original(self, category, key)
            where = (self.prefix, category, key)
            if where not in _REGISTRY_VALUES:
                _REGISTRY_VALUES[where] = original(self, category, key)
            return _REGISTRY_VALUES[where]

        return get

    def make_contains(original):
        def contains(self, category, key):
            if not _internal_kv_initialized():
                return original(self, category, key)
            where = (self.prefix, category, key)
            if where in _REGISTRY_VALUES or where in _REGISTRY_KNOWN:
                return True
            found = original(self, category, key)
            if found:  # only a key that is there: one registered later is found then
                _REGISTRY_KNOWN.add(where)
            return found

        return contains

    def make_forgetting(original):
        def forgetting(self, *args, **kwargs):  # register or unregister: read everything again
            _REGISTRY_VALUES.clear()
            _REGISTRY_KNOWN.clear()
            return original(self, *args, **kwargs)

        return forgetting

    _replace(_Registry, "get", make_get)
    _replace(_Registry, "contains", make_contains)
    _replace(_Registry, "register", make_forgetting)
    _replace(_Registry, "unregister", make_forgetting)
