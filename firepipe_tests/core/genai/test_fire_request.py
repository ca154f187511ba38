"""A fire-scenario request mapped onto the bronze asset's partitions and run config."""

from __future__ import annotations

import pytest

from firepipe.core.genai.fire_request import (
    FireRequest,
    FireRequestError,
    free_batch,
    plan,
    shares_of,
    split_devices,
)
from firepipe.core.simulation.partitions import partition_generation
from firepipe.defs.generation.assets import synthetic_readings
from firepipe.defs.generation.partitions import PARTITIONS, Cell


def test_devices_are_split_by_largest_remainder_and_add_up() -> None:
    assert split_devices(10, {"flaming": 0.75, "smouldering": 0.25}) == {
        "flaming": 8,
        "smouldering": 2,
    }
    assert split_devices(7, {"baseline": 1 / 3, "flaming": 1 / 3, "nuisance": 1 / 3}) == {
        "baseline": 3,
        "flaming": 2,
        "nuisance": 2,
    }
    assert sum(split_devices(1001, {"a": 0.1, "b": 0.2, "c": 0.7}).values()) == 1001
    with pytest.raises(FireRequestError, match="leave none to smouldering"):
        split_devices(3, {"flaming": 0.9, "smouldering": 0.1})


def test_shares_default_to_equal_and_a_mix_must_add_up() -> None:
    assert shares_of(None, None) == dict.fromkeys(
        ("baseline", "flaming", "smouldering", "nuisance"), 0.25
    )
    assert shares_of(["flaming", "nuisance"], None) == {"flaming": 0.5, "nuisance": 0.5}
    assert shares_of(None, {"flaming": 0.2, "baseline": 0.8}) == {"flaming": 0.2, "baseline": 0.8}
    with pytest.raises(FireRequestError, match=r"add up to 1\.1, not 1"):
        shares_of(None, {"flaming": 0.6, "baseline": 0.5})
    with pytest.raises(FireRequestError, match=r"unknown families \['kitchen'\]"):
        shares_of(["kitchen"], None)


def test_the_free_batch_skips_the_reference_and_what_is_taken() -> None:
    assert free_batch("flaming", set()) == "001"
    assert free_batch("flaming", {"000", "001", "003"}) == "002"
    with pytest.raises(FireRequestError, match="name a batch to replace"):
        free_batch("flaming", {f"{i:03d}" for i in range(1, 16)})


def test_a_plan_is_runs_of_the_assets_partitions_with_the_assets_config() -> None:
    request = FireRequest(
        devices=5, duration_s=20, seed=4, fault_share=0.2, mix={"smouldering": 0.4, "nuisance": 0.6}
    )
    chosen = plan(request, {"smouldering": {"000", "001"}, "nuisance": {"000"}})
    assert [(r.family, r.batch, r.settings.devices) for r in chosen.runs] == [
        ("smouldering", "002", 2),
        ("nuisance", "001", 3),
    ]
    assert chosen.rows == 5 * 20
    assert chosen.warnings == []
    keys = PARTITIONS.get_partition_keys()
    for run in chosen.runs:
        assert run.partition_key == Cell(run.family, run.batch).key
        assert run.partition_key in keys
        # the spec the asset will build from this config: the request's seed and sizes
        spec = partition_generation(run.settings, run.family, run.batch).spec
        assert (spec.devices, spec.duration_s, spec.fault_share) == (
            run.settings.devices,
            20,
            0.2,
        )
    [op_name] = run.run_config()["ops"]
    assert op_name == synthetic_readings.op.name


def test_a_named_batch_replaces_and_bad_sizes_are_refused() -> None:
    chosen = plan(FireRequest(devices=2, duration_s=10, seed=0, families=["flaming"], batch=0), {})
    assert [r.partition_key for r in chosen.runs] == ["000|flaming"]
    assert chosen.warnings == []  # the reference itself: nothing to compare it with
    for bad, words in (
        (FireRequest(devices=0, duration_s=10, seed=0), "devices must be"),
        (FireRequest(devices=2, duration_s=1, seed=0), "duration_s must be"),
        (FireRequest(devices=2, duration_s=10, seed=0, fault_share=1.5), "fault_share"),
        (FireRequest(devices=2, duration_s=10, seed=0, batch=16), "batch must be 0-15"),
    ):
        with pytest.raises(FireRequestError, match=words):
            plan(bad, {})
