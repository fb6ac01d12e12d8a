"""sweep.space on random valid studies: what pack_grid promises holds for every grid.

The promises are those of sweep/space.py's docstrings: every configuration of the grid in exactly
one pack; a pack shares optimizer and batch size; ``N`` caps a pack at N and ``auto`` at
``pack_cap`` (memory), each using as few packs as the cap allows unless ``auto`` splits groups so
that no slot idles; the packs of a group are even (sizes differ by at most one); smaller batch
sizes first and, within one, larger packs first; the param_space is plain data.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

from hypothesis import example, given, settings
from hypothesis import strategies as st

from model.optim import OPTIMIZERS
from sweep.config import parse_study
from sweep.space import (
    PACK_KEY,
    expand_grid,
    pack_cap,
    pack_grid,
    param_space,
    point_key,
    trial_count,
)

# Learning rates that print distinctly (point_key uses repr) and are valid (> 0).
LRS = st.floats(min_value=1e-6, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def studies(draw) -> dict:
    """A raw, valid study: 1-4 optimizers with 1-6 lrs each, 1-4 batch sizes, 1-4 seeds."""
    names = draw(st.lists(st.sampled_from(sorted(OPTIMIZERS)), min_size=1, max_size=4, unique=True))
    optimizers = {
        name: {"lr": draw(st.lists(LRS, min_size=1, max_size=6, unique=True))} for name in names
    }
    seeds = draw(
        st.one_of(
            st.integers(1, 4),
            st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4, unique=True),
        )
    )
    return {
        "name": "prop",
        "model": {"hidden": draw(st.lists(st.integers(1, 4096), min_size=1, max_size=3))},
        "train": {"epochs": 2},
        "search": {
            "batch_size": draw(st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True)),
            "seeds": seeds,
            "optimizers": optimizers,
        },
        "resources": {"models_per_trial": draw(st.one_of(st.just("auto"), st.integers(1, 10)))},
    }


SHAPES = {
    # input sizes up to ~200k features make the memory cap bite (down to one member a pack)
    "input_size": st.integers(1, 200_000),
    "output_size": st.integers(1, 1000),
    "slots": st.integers(1, 32),
}


def _groups(points: list[dict]) -> dict[tuple[str, int], list[str]]:
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for point in points:
        groups[(point["optimizer"], point["batch_size"])].append(point["trial_id"])
    return groups


@settings(max_examples=150, deadline=None)
@given(raw=studies(), **SHAPES)
def test_packs_partition_the_grid_by_optimizer_and_batch_size(
    raw, input_size, output_size, slots
) -> None:
    study = parse_study(raw)
    points = expand_grid(study)
    packs = pack_grid(study, input_size=input_size, output_size=output_size, slots=slots)
    assert [pack["id"] for pack in packs] == list(range(len(packs)))
    assert len(points) == trial_count(study)
    ids = [point["trial_id"] for point in points]
    assert len(set(ids)) == len(ids)
    assert ids == [point_key(point) for point in points]
    members = Counter(m["trial_id"] for pack in packs for m in pack["members"])
    assert members == Counter(ids)  # each configuration in exactly one pack
    by_id = {point["trial_id"]: point for point in points}
    for pack in packs:
        assert pack["members"], "an empty pack"
        assert len({(m["optimizer"], m["batch_size"]) for m in pack["members"]}) == 1
        assert all(m == by_id[m["trial_id"]] for m in pack["members"])  # the grid's own points
    order = [(pack["members"][0]["batch_size"], -len(pack["members"])) for pack in packs]
    assert order == sorted(order)  # smaller batches first; within one, larger packs first


def _example(optimizers: dict, seeds: int, slots: int):
    """A study of one batch size, tiny network, auto packing; at the given slots."""
    raw = {
        "name": "prop",
        "model": {"hidden": [1]},
        "train": {"epochs": 2},
        "search": {"batch_size": [1], "seeds": seeds, "optimizers": optimizers},
        "resources": {"models_per_trial": "auto"},
    }
    return example(raw=raw, input_size=1, output_size=1, slots=slots)


@settings(max_examples=150, deadline=None)
@given(raw=studies(), **SHAPES)
# Found by this test: 16 configurations split for 7 slots came out as 6 + 6 + 4, and one group
# of 6 split for 4 slots as 2 + 2 + 2 (3 packs: a slot idled).
@_example({"adagrad": {"lr": [1.0]}, "adam": {"lr": [1.0]}, "adamw": {"lr": [1, 2, 3, 4]}}, 4, 7)
@_example({"adagrad": {"lr": [1.0, 0.5, 0.25]}}, 2, 4)
def test_pack_sizes_follow_the_cap_and_the_slots(raw, input_size, output_size, slots) -> None:
    study = parse_study(raw)
    points = expand_grid(study)
    packs = pack_grid(study, input_size=input_size, output_size=output_size, slots=slots)
    groups = _groups(points)
    sizes: dict[tuple[str, int], list[int]] = defaultdict(list)
    for pack in packs:
        first = pack["members"][0]
        sizes[(first["optimizer"], first["batch_size"])].append(len(pack["members"]))
    wanted = study.resources.models_per_trial
    splits = wanted == "auto" and len(groups) < slots
    for key, members in groups.items():
        cap = pack_cap(study, input_size, output_size, key[1])
        if wanted != "auto":
            assert cap == wanted
        assert 1 <= cap <= 256
        assert max(sizes[key]) <= cap
        assert max(sizes[key]) - min(sizes[key]) <= 1  # a group's packs are even
        if not splits:  # as few packs as the cap allows: whole groups when they fit
            assert len(sizes[key]) == math.ceil(len(members) / cap)
    if wanted == 1:
        assert len(packs) == len(points)
    if splits:  # no slot idles while a configuration could fill it
        assert len(packs) >= min(slots, len(points))


@settings(max_examples=100, deadline=None)
@given(raw=studies(), **SHAPES)
def test_param_space_is_plain_data_of_the_packs(raw, input_size, output_size, slots) -> None:
    study = parse_study(raw)
    shape = {"input_size": input_size, "output_size": output_size, "slots": slots}
    space = param_space(study, **shape)
    assert list(space) == [PACK_KEY]
    assert json.loads(json.dumps(space)) == space
    assert space[PACK_KEY] == {"grid_search": pack_grid(study, **shape)}
    assert pack_grid(study, **shape) == pack_grid(study, **shape)  # the same study, the same packs
