"""Hostile JSON and YAML files, round two: numbers, nesting, key counts, alias bombs and sizes that blew up parsers
or error messages. Each is refused with one line naming the file and the problem, within a time bound, through
the real readers of cards, rigs and parameter files (files.py underneath).

A Hypothesis slice (EXAMPLES, fixed seed) throws random documents with such parts at the readers; set
HSI_XAI_FUZZ_EXAMPLES=5000 to search harder.
"""

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsi_xai_node.detection.card import DetectorCard
from hsi_xai_node.errors import ConfigError, InputError, RigError
from hsi_xai_node.files import LIMITS, MAX_DEPTH, MAX_INT_DIGITS, MAX_ITEMS, read_json, read_yaml
from hsi_xai_node.model_card import ModelCard, ModelError
from hsi_xai_node.sensor.rig import DEFAULT_RIG, read_rig
from hsi_xai_node.transports.config import load_config
from test.conftest import REPO

SECONDS = 10.0  # each hostile file is refused well within this on a loaded 2-core machine (measured: < 1 s)
BUNDLED_CARD = REPO / "models" / "unet_bundled_25pn.json"
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, "
                                                              f"*{p}, *{p}, *{p}]"
                                                              for p, c in zip("abcdefgh", "bcdefghi")])


def _one_line(exc) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) <= 1000, text
    return text


def _refused(fn, error, *needles):
    t0 = time.monotonic()
    with pytest.raises(error) as info:
        fn()
    assert time.monotonic() - t0 < SECONDS
    text = _one_line(info.value)
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture
def card_doc():
    return json.loads(BUNDLED_CARD.read_text())


def test_cards_with_hostile_numbers_nesting_and_keys(tmp_path, card_doc):
    path = tmp_path / "card.json"
    cases = {
        "an integer of 5001 digits": json.dumps(card_doc).replace('"crop_top": 4', '"crop_top": ' + "9" * 5001),
        "nested deeper": '{"a": ' + "[" * 1000 + "]" * 1000 + "}",
        "nested deeper ": '{"a": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}",
        # one key repeated (a dict keeps the last): the count, not the file size, stops it
        f"more than {MAX_ITEMS} keys": "{" + ",".join(['"a":0'] * (MAX_ITEMS + 10)) + "}",
    }
    for needle, text in cases.items():
        path.write_text(text)
        _refused(lambda: ModelCard.load(path), ModelError, str(path), needle.strip())
        _refused(lambda: DetectorCard.load(path), ModelError, str(path))
    assert '"crop_top": 4' in json.dumps(card_doc)  # the number case really replaced a number


def test_a_card_over_its_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:  # sparse: 50 MB on paper, nothing to read
        f.truncate(50 << 20)
    _refused(lambda: ModelCard.load(path), ModelError, "larger than any model card", str(LIMITS["model card"]))


def test_yaml_alias_bombs_are_refused_wherever_they_hide(tmp_path):
    rig = tmp_path / "rig.yaml"
    good = DEFAULT_RIG.read_text()
    for text in (BOMB + "\n" + good,  # under an unknown key
                 good.replace("homography:", "homography: *i\nx_homography:", 1) + "\n" + BOMB,
                 BOMB + "\ncameras:\n  - name: *i\n"):
        rig.write_text(text)
        _refused(lambda: read_rig(rig), RigError, str(rig), "aliases are not allowed")
    config = tmp_path / "params.yaml"
    config.write_text(BOMB + "\nhsi_xai_node:\n  ros__parameters:\n    memory_limit_mb: *i\n")
    _refused(lambda: load_config(config), ConfigError, str(config), "aliases are not allowed")


def test_yaml_numbers_nesting_and_size(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text("hsi_xai_node:\n  ros__parameters:\n    memory_limit_mb: " + "9" * 5001 + "\n")
    _refused(lambda: load_config(config), ConfigError, "a number of 5001 characters", f"at most {MAX_INT_DIGITS}")
    config.write_text("hsi_xai_node:\n  ros__parameters:\n    methods: " + "[" * 200 + "]" * 200 + "\n")
    _refused(lambda: load_config(config), ConfigError, f"nested deeper than {MAX_DEPTH} levels")
    config.write_text("hsi_xai_node:\n  ros__parameters:\n    methods: " + "[" * 5000 + "]" * 5000 + "\n")
    _refused(lambda: load_config(config), ConfigError, str(config))  # LibYAML's own limit (1000), or ours
    with open(config, "wb") as f:
        f.truncate(50 << 20)
    _refused(lambda: load_config(config), ConfigError, "larger than any config")
    config.write_bytes(b"hsi_xai_node:\n  ros__parameters:\n    model: \xff\xfe\n")
    _refused(lambda: load_config(config), ConfigError, "not UTF-8")
    rig = tmp_path / "rig.yaml"
    rig.write_text("cameras: [" + "0," * (MAX_ITEMS + 5) + "0]\n")  # 200 KB: under the size limit
    _refused(lambda: read_rig(rig), RigError, f"more than {MAX_ITEMS} values")


def test_the_shipped_files_stay_well_inside_their_limits():
    for path, what in ((BUNDLED_CARD, "model card"), (REPO / "models" / "efficientdet_rgb_mir.json", "detector card"),
                       (DEFAULT_RIG, "rig file"), (REPO / "config" / "hsi_xai.yaml", "config")):
        assert path.stat().st_size * 10 < LIMITS[what], path
        (read_json if path.suffix == ".json" else read_yaml)(path, what, InputError)
    ModelCard.load(BUNDLED_CARD)
    read_rig()
    load_config(REPO / "config" / "hsi_xai.yaml")


def test_a_huge_value_is_shortened_before_it_is_formatted(tmp_path):
    """An error about a value must not format all of it (a 60,000-item homography: one short line)."""
    rig = tmp_path / "rig.yaml"
    rig.write_text(DEFAULT_RIG.read_text().replace("homography:", "homography: [" + ", ".join(["1"] * 60_000)
                                                   + "]\n    old_homography:", 1))
    _refused(lambda: read_rig(rig), RigError, str(rig), "homography")


EXAMPLES = int(os.environ.get("HSI_XAI_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
HOSTILE_PART = st.sampled_from(["9" * 4400, "-" + "9" * 60, "1e99999", "[" * 300 + "]" * 300, "{" * 70 + "}" * 70,
                                "\ud800", "\x00", "&a [1]", "*a", "!!python/object:os.system ls", "? [a]\n: b",
                                "!!binary AAAA", "2001-13-45", "0x" + "f" * 80, "1:2:3:4:5:6:7:8:9:" * 10])


@FUZZ
@given(parts=st.lists(HOSTILE_PART, min_size=1, max_size=4), as_json=st.booleans(), where=st.integers(0, 3))
def test_random_hostile_documents_give_the_project_error_or_a_value(tmp_path_factory, parts, as_json, where):
    path = tmp_path_factory.mktemp("hostile") / ("doc.json" if as_json else "doc.yaml")
    body = ", ".join(parts)
    text = [f'{{"a": [{body}]}}', f'{{"a": {parts[0]}}}', f"a: [{body}]\n", f"a: {parts[0]}\nb: {body}\n"][where]
    path.write_text(text, errors="surrogatepass") if "\ud800" not in text else path.write_bytes(
        text.encode("utf-8", "surrogatepass"))
    t0 = time.monotonic()
    try:
        (read_json if as_json else read_yaml)(path, "config", ConfigError)
    except ConfigError as exc:
        assert str(path) in _one_line(exc)
    assert time.monotonic() - t0 < SECONDS
