"""Property-based tests (Hypothesis) of every parser a user's file reaches, and of the pipelines' inputs.

Property: whatever the input, the result is either a valid object or the project's own error for that
kind of input (CalibrationError, ModelError, RigError, ConfigError, InputError), never a foreign
exception, and never a profile or card holding nonsense (non-finite or out-of-range values).

CI runs a small, fixed-seed slice (EXAMPLES per parser, derandomized); set HSI_XAI_FUZZ_EXAMPLES=5000 to
search harder.
"""

import json
import math
import os
import re

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsi_xai_node.detection.card import DetectorCard
from hsi_xai_node.errors import CalibrationError, ConfigError, FrameError, InputError, RigError
from hsi_xai_node.model_card import ModelCard, ModelError
from hsi_xai_node.sensor.calibration import BUNDLED_XML, parse_imec_xml
from hsi_xai_node.sensor.frontend import FrontEnd, FrontEndConfig
from hsi_xai_node.sensor.rig import DEFAULT_RIG, read_rig
from hsi_xai_node.transports.config import NodeConfig
from test.conftest import REPO

EXAMPLES = int(os.environ.get("HSI_XAI_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# values a hostile or careless file holds where numbers belong
NASTY = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e20", "-1", "0", "-0", "1.5",
                         "3.7", "1000000000", "1000000", "0x10", "1,2", "1 2", "abc", "5 ", " 5", "1e-400", "+7",
                         "\u0663", "\x00", "9" * 400])
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=20), NASTY)
JSON = st.recursive(JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                                              max_size=4)),
                    max_leaves=12)


# --- imec calibration XML ---------------------------------------------------------------------------
XML_TEXTS = {name: path.read_text() for name, path in BUNDLED_XML.items()}
NUMBER_FIELDS = re.compile(r"<(\w+)>([-+0-9.eE]+)</\1>")
ATTRIBUTES = re.compile(r'(order|index|pattern_position_index|nr_elements)="([^"]*)"')


@st.composite
def damaged_xml(draw):
    text = XML_TEXTS[draw(st.sampled_from(sorted(XML_TEXTS)))]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "attribute", "duplicate", "drop", "truncate"]))
        if kind in ("number", "attribute", "duplicate", "drop"):
            matches = list((NUMBER_FIELDS if kind != "attribute" else ATTRIBUTES).finditer(text))
            if not matches:  # an earlier truncation may have left none
                continue
            m = matches[draw(st.integers(0, len(matches) - 1))]
            if kind == "number":
                text = text[:m.start(2)] + draw(NASTY) + text[m.end(2):]
            elif kind == "attribute":
                text = text[:m.start(2)] + draw(NASTY) + text[m.end(2):]
            elif kind == "duplicate":
                text = text[:m.end()] + m.group(0) + text[m.end():]
            else:
                text = text[:m.start()] + text[m.end():]
        else:
            text = text[:draw(st.integers(0, len(text)))]
    return text


@FUZZ
@given(text=damaged_xml())
def test_calibration_xml(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("xml") / "cal.xml"
    path.write_text(text)
    try:
        p = parse_imec_xml(path)
    except CalibrationError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 800
        return
    assert 1 <= p.pattern_width <= 16 and 1 <= p.pattern_height <= 16 and 1 <= p.bit_depth <= 16
    assert p.offset_x + p.area_width <= p.sensor_width and p.offset_y + p.area_height <= p.sensor_height
    for peaks in p.peaks:
        assert peaks[0].order == 1 and len({q.order for q in peaks}) == len(peaks)
        for q in peaks:
            assert math.isfinite(q.wavelength_nm) and q.fwhm_nm > 0
            assert q.contribution is None or 0 <= q.contribution <= 1
            assert q.qe is None or q.qe >= 0
    assert np.isfinite(p.responses).all() and p.responses.shape == (p.n_bands, p.response_wavelengths_nm.size)


# --- model and detector cards ------------------------------------------------------------------------
def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def damaged_json(draw, path):
    doc = json.loads(path.read_text())
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)  # not a card at all: a list, null, a string, a number
    paths = [p for p in _paths(doc) if p]
    for _ in range(draw(st.integers(1, 3))):
        where = paths[draw(st.integers(0, len(paths) - 1))]
        node = doc
        try:
            for k in where[:-1]:
                node = node[k]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(where[-1], None)
            else:
                node[where[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            pass
    return doc


def _sane_card(card):
    names = [c.name for c in card.classes]
    assert len(set(names)) == len(names) and all(0 <= c.id <= 255 for c in card.classes)
    assert all(len(c.bgr) == 3 and all(0 <= v <= 255 for v in c.bgr) for c in card.classes)


@FUZZ
@given(doc=damaged_json(REPO / "models" / "unet_bundled_25pn.json"))
def test_model_card(doc):
    try:
        card = ModelCard.from_dict(doc, "card")
    except ModelError as exc:
        assert str(exc).startswith("card") and len(str(exc)) <= 600
        return
    _sane_card(card)
    assert math.isfinite(card.input.scale) and card.input.scale > 0
    assert all(isinstance(v, int) and v >= 1 for v in card.input.shape)
    assert all(math.isfinite(v) for v in card.input.bands_nm)


@FUZZ
@given(doc=damaged_json(REPO / "models" / "efficientdet_rgb_mir.json"))
def test_detector_card(doc):
    try:
        card = DetectorCard.from_dict(doc, "card")
    except ModelError as exc:
        assert str(exc).startswith("card") and len(str(exc)) <= 600
        return
    _sane_card(card)
    assert 0 <= card.postprocess["score_threshold"] < 1 and card.postprocess["max_detections"] >= 1


# --- rig ---------------------------------------------------------------------------------------------
@st.composite
def damaged_rig(draw):
    doc = yaml.safe_load(DEFAULT_RIG.read_text())
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    paths = [p for p in _paths(doc) if p]
    for _ in range(draw(st.integers(1, 3))):
        where = paths[draw(st.integers(0, len(paths) - 1))]
        node = doc
        try:
            for k in where[:-1]:
                node = node[k]
            node[where[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            pass
    return doc


@FUZZ
@given(doc=damaged_rig())
def test_rig(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        rig = read_rig(path)
    except RigError as exc:
        assert str(path) in str(exc)
        return
    for cam in rig.cameras.values():
        assert 1 <= cam.width <= 65535 and np.isfinite(cam.homography).all()
        assert abs(np.linalg.det(cam.homography)) > 1e-12


# --- node / replay parameters and front-end options -----------------------------------------------------
FIELDS = [f for f in NodeConfig.__dataclass_fields__]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3))
def test_node_config(changes):
    try:
        config = NodeConfig(**changes)
    except ConfigError as exc:
        assert "parameter" in str(exc) or "camera name" in str(exc)
        return
    assert 0 <= config.overlay_alpha <= 1 and config.explain_boxes >= 0 and math.isfinite(config.sync_slop_s)


@FUZZ
@given(options=st.fixed_dictionaries({}, optional={
    "demosaic": st.one_of(st.sampled_from(["subsample", "bilinear"]), JSON_LEAF),
    "median_ksize": st.one_of(st.sampled_from([0, 3, 5, 3.0, -3, 7]), JSON_LEAF),
    "bands": st.one_of(st.sampled_from(["all", "central", "paper000-3", None, [], [731.88], [731.88, 400.0]]),
                       st.lists(st.floats(), max_size=3), JSON_LEAF),
    "band_tolerance_nm": st.one_of(st.floats(), JSON_LEAF),
    "normalise": JSON_LEAF, "saturation_bit_depth": st.one_of(st.integers(-3, 40), JSON_LEAF),
    "correction": st.one_of(st.sampled_from(["hsi", "custom", None]), JSON_LEAF)}))
def test_front_end_options(hsi_drive, options):
    try:
        FrontEnd(hsi_drive, config=FrontEndConfig(**options))
    except InputError:
        return


# --- the pipelines' inputs ----------------------------------------------------------------------------
_PIPELINES = {}


def _pipelines():
    if not _PIPELINES:
        from hsi_xai_node.runtime import Pipeline, PipelineConfig
        from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig

        _PIPELINES["seg"] = Pipeline(PipelineConfig(backend="ort-cpu", methods=("activation",)))
        _PIPELINES["det"] = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu", explain_boxes=0))
    return _PIPELINES


ARRAYS = st.one_of(
    st.builds(lambda shape, dtype: np.zeros(shape, dtype), st.sampled_from([(1088, 2048), (1088, 2047), (10, 10),
                                                                          (1088, 2048, 1), (0, 0), ()]),
              st.sampled_from([np.uint16, np.uint8, np.float32, np.int32, np.float64, bool])),
    JSON_LEAF)


@settings(max_examples=max(EXAMPLES // 3, 20), derandomize=True, deadline=None, database=None)
@given(raw=ARRAYS)
def test_segmentation_pipeline_inputs(raw):
    p = _pipelines()["seg"]
    try:
        r = p.process(raw)
    except FrameError:
        return
    assert r.labels.shape == (216, 409)


@settings(max_examples=max(EXAMPLES // 3, 20), derandomize=True, deadline=None, database=None)
@given(images=st.one_of(JSON_LEAF, st.lists(ARRAYS, max_size=2),
                        st.dictionaries(st.sampled_from(["rgb", "mir", "nir", "x"]), ARRAYS, max_size=3)))
def test_detection_pipeline_inputs(images):
    try:
        _pipelines()["det"].process(images)
    except InputError:
        return
