"""bench/common.by_state: the rounds of a benchmark split by the speed the VM ran at (it switches between two)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import by_state  # noqa: E402  (bench/ is a folder of scripts, not a package)


def test_rounds_are_split_by_the_state_of_the_reference_calls_around_them():
    fast = [(0.0325, 0.2275, 0.0326)] * 6  # 7.0x the forward
    slow = [(0.0415, 0.2490, 0.0414)] * 4  # 6.0x
    straddling = [(0.0326, 0.2400, 0.0416)]  # switched during the call: left out
    last = [(0.0414, 0.2484, None)]  # the run's last call: its reference before decides
    got = by_state({"g": fast + slow + straddling + last})["g"]
    assert got["fast"] == (pytest.approx(7.0, rel=1e-3), 6)
    assert got["slow"] == (pytest.approx(6.0, rel=1e-3), 5)


def test_one_state_and_a_lone_slow_call():
    steady = [(0.0325 + 1e-5 * i, 0.2275, 0.0325) for i in range(8)]
    assert by_state({"g": steady})["g"] == {"all": (pytest.approx(7.0, rel=1e-2), 8)}
    # a lone slow forward does not split the steady rounds (its round, with a fast call after it, is left out)
    got = by_state({"g": steady + [(0.060, 0.2275, 0.0325)]})["g"]
    assert got["fast"][1] == 8
