"""CI's accuracy gate (`python benchmarks/accuracy.py --gate`): its bounds follow the rule its comment
states (recorded 3-seed mean minus two standard deviations of that mean), the recorded results pass them,
and a real regression fails them (a DOC drop of 0.02, ArcFace or the shipped backbone 0.01, patch 0.005)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy  # noqa: E402

RECORDS = {  # which recorded 3-seed result each gated method comes from
    "arcface-own-class + knn": "accuracy-methods-sneaker-vs-boot.json",
    "doc + knn": "accuracy-methods-sneaker-vs-boot.json",
    "patch + topk-10": "accuracy-methods-sneaker-vs-boot-patch.json",
    "shipped + knn": "accuracy-methods-sneaker-vs-boot-shipped.json",
}
DROPS = {"doc + knn": 0.02, "arcface-own-class + knn": 0.01, "shipped + knn": 0.01, "patch + topk-10": 0.005}


def recorded(key: str) -> tuple[float, float]:
    result = json.loads((accuracy.RESULTS / RECORDS[key]).read_text(encoding="utf-8"))
    assert len(result["seeds"]) >= 3
    mean, std = result["test_auc_mean_std"][key]
    return mean, std


def test_every_gated_method_has_a_record_and_the_gate_runs_them_all():
    assert set(accuracy.GATES) == set(RECORDS) == set(DROPS)
    methods = accuracy.GATE_COMMAND.split("--methods ")[1].split()[0].split(",")
    assert {key.split(" + ")[0] for key in accuracy.GATES} == set(methods)


@pytest.mark.parametrize("key", sorted(RECORDS))
def test_bound_is_two_stds_of_the_three_seed_mean_below_the_record(key):
    mean, std = recorded(key)
    bound = accuracy.GATES[key]
    assert bound == pytest.approx(math.floor((mean - 2 * std / math.sqrt(3)) * 1000) / 1000, abs=1e-9)
    assert accuracy.gate_failures({"test_auc_mean_std": {k: list(recorded(k)) for k in RECORDS}}) == []
    drop = DROPS[key]
    dropped = {k: [recorded(k)[0] - (drop if k == key else 0.0), 0.0] for k in RECORDS}
    failed = accuracy.gate_failures({"test_auc_mean_std": dropped})
    assert [line.split(" ")[0] for line in failed] == [key.split(" ")[0]], failed


def test_a_method_missing_from_the_run_fails_the_gate():
    failed = accuracy.gate_failures({"test_auc_mean_std": {"doc + knn": [0.95, 0.0]}})
    assert len(failed) == len(accuracy.GATES) - 1 and all("missing" in line for line in failed)


def test_global_defaults_cifar_pool_never_touches_a_methods_test_image(cifar10_npz):
    """benchmarks/global_defaults.py chose a default on CIFAR-10 validation images; the methods record's
    test carves (seeds 0-2) must not be among them, and the carve must be the one methods_data uses."""
    import global_defaults  # noqa: E402  (beside accuracy.py)
    import numpy as np

    x, y, _ = accuracy._cifar10()
    pool = global_defaults.pool_indices("cifar10", y)
    assert len(pool) == 10 * global_defaults.POOLS["cifar10"][0]
    for seed in (0, 1, 2):
        test = accuracy.cifar10_test_mask(y, np.random.default_rng(seed))
        assert test.sum() == 10 * accuracy.CIFAR10_TEST_PER_CLASS and not test[pool].any()
        data = accuracy.methods_data({"experiment": "methods-cifar10-one-class"}, np.random.default_rng(seed))
        assert np.array_equal(data["test"][1], y[test]) and np.array_equal(data["test"][0], x[test])
