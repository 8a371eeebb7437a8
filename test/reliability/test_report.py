"""`hsi-xai reliability` end to end on small settings: the report's numbers keep the papers' known answers."""

import json
import re

import numpy as np
import pytest

from hsi_xai_node.cli import main
from hsi_xai_node.reliability.report import BOX_REPORT_ROWS, SEG_METHODS

INPUTS = ("gradient", "lrp_epsilon", "integrated_gradients", "deeplift")  # a few of paper 003's, for the suite's time
from test.chromium import render


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_detector):
    out = tmp_path_factory.mktemp("reliability")
    pytest.importorskip("torch", reason="label randomisation trains a model: pip install -e '.[test]'")
    assert main(["reliability", "--out", str(out), "--frames", "1", "--rise-masks", "16", "--steps", "4",
                 "--cascade-steps", "2", "--threads", "1", "--detector", str(tiny_detector),
                 "--train-random-labels", "2", "--random-labels-size", "tiny", "--input-methods", ",".join(INPUTS),
                 "--ig-steps", "2", "--smoothgrad-samples", "2", "--sensitivity-draws", "1"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_conservativeness_and_sanity_sections(report):
    _, r = report
    cons = r["conservativeness"]
    assert cons["activation@dec1"]["conservative"] is True and cons["activation@dec1"]["max"] < 1e-6
    assert cons["seg_gradcam@dec1"]["conservative"] is False and cons["seg_gradcam@dec1"]["median"] > 0.1
    cascade = r["sanity"]["cascading"]
    assert [c["depth"] for c in cascade] == [1, r["sanity"]["layers"]] and cascade[0]["layer"] == "/head/Conv"
    deepest = cascade[-1]["methods"]
    assert abs(deepest["seg_gradcam"]["spearman"]) < 0.3  # the maps of a randomised model decorrelate
    labels = r["sanity"]["label_randomisation"]  # a (2-step, tiny) model trained on permuted labels
    assert set(labels) == {*SEG_METHODS, *INPUTS}
    assert all(-1.0 <= v["spearman"] <= 1.0 and v["rows"] > 0 for v in labels.values())


def test_faithfulness_sections(report):
    _, r = report
    seg, det = r["segmentation_faithfulness"], r["detection_faithfulness"]
    assert set(seg) == {*SEG_METHODS, *INPUTS, "rise", "sidu"}  # every in-graph method has its row
    assert set(det) == {*BOX_REPORT_ROWS, "rise", "sidu"}
    for rows in (seg, det):
        for v in rows.values():
            assert 0.0 <= v["deletion"] and 0.0 <= v["insertion"] and v["seconds_per_map"] > 0
    # the trained U-Net's class scores stay near the unperturbed one along the curves; the random-weight test
    # detector's box scores may rise far above it as pixels come in (box_input_x_gradient's insertion: 2.6 measured)
    assert all(v["deletion"] <= 1.5 and v["insertion"] <= 1.5 for v in seg.values())
    # Seg-Grad-CAM at the layer before the final 1x1 conv is the activation map times |region| / pixels:
    # the same ranking, hence the same curves (paper 000's point that CAM and Grad-CAM coincide there)
    assert seg["seg_gradcam_signed"]["deletion"] == pytest.approx(seg["activation"]["deletion"], abs=1e-9)
    assert seg["rise"]["seconds_per_map"] > seg["seg_gradcam"]["seconds_per_map"]


def test_page_renders_every_image(report, tmp_path):
    out, r = report
    page = (out / "index.html").read_text()
    images = re.findall(r"<img[^>]* src='([^']+)'", page)
    assert "sanity_cascading.png" in images and all((out / i).is_file() for i in images)
    for width in (1400, 390):  # a desktop window, a phone
        probe = render(out / "index.html", tmp_path / str(width), width=width)
        assert probe["loaded"] == probe["images"] == len(images) and probe["overflow_x"] == 0, width
        assert probe["min_font_px"] >= 13 and probe["min_plot_scale"] >= 0.999, (width, probe)
    assert np.isfinite(r["segmentation_faithfulness"]["rise"]["insertion"])


def test_the_page_says_what_ran_and_each_method_costs_its_own(report):
    out, r = report
    page = (out / "index.html").read_text()
    run = r["run"]
    assert run["model"].startswith("unet_bundled_25pn (card sha256 ") and run["detector"].startswith("tiny_det_rgb_mir")
    assert "drive seed(s) 2000, frame 30" in run["data"] and run["preset"] == "full (the defaults)"
    assert "RISE masks 16, perturbation steps 4, cascade depths 2" in run["options"]
    assert "UTC" in run["date"] and "cores (" in run["machine"]
    assert page.index("What ran") < page.index("1. Conservativeness") and "drive seed(s) 2000, frame 30" in page
    assert r["frames"] == [{"drive_seed": 2000, "frame": 30}]
    seg, det = r["segmentation_faithfulness"], r["detection_faithfulness"]
    # each in-graph method timed on its own graph: Score-CAM's masked forwards cost several Grad-CAMs (about 12x
    # measured), EigenCAM needs no backward at the detector's boxes
    assert seg["scorecam"]["seconds_per_map"] > 3 * seg["seg_gradcam"]["seconds_per_map"]
    assert len({round(v["seconds_per_map"], 6) for k, v in seg.items() if k in SEG_METHODS}) > 3
    assert det["box_eigencam"]["seconds_per_map"] < det["box_gradcam"]["seconds_per_map"]


def test_the_estimate_advises_quick_only_when_not_quick():
    from hsi_xai_node.reliability.config import ReportConfig
    from hsi_xai_node.reliability.report import estimate_text

    est = {"total_s": 600, "sections_s": {"segmentation": 500, "band study": 100}, "forward16_s": 1.0,
           "explain_graph_forwards": 42.0, "build_s": 6.0}
    assert "--quick or --rise-masks" in estimate_text(est, ReportConfig())
    quick = estimate_text(est, ReportConfig(preset="quick"))
    assert "--quick" not in quick and "--rise-masks makes it shorter" in quick
    assert "the explain graph's 42 forwards' worth of multiply-adds" in quick
    assert "the explain graph's build of 6.0 s measured now" in quick


def test_the_estimate_counts_the_explain_graphs_arithmetic():
    """Integrated gradients' 17 path points each run the forward and a backward to the input for every class:
    17 times the gradient's graph in multiply-adds (bench/attributions.py: 102.3 against 6.02 forwards), and the
    estimate grows by the report's runs of that graph (the estimate before counted none: --quick took 7 min against
    an estimated 3)."""
    import onnx

    from hsi_xai_node.explain import PathOptions, SegmentationExplainConfig, build_segmentation_explainer
    from hsi_xai_node.model_card import load_model
    from hsi_xai_node.reliability.config import ReportConfig
    from hsi_xai_node.reliability.report import estimate_seconds

    loaded = load_model("models/unet_bundled_25pn.onnx")
    card, model = loaded.card, onnx.load_model_from_string(loaded.onnx_bytes)
    x = np.random.default_rng(0).uniform(0.0, 1.0, (1, *card.input.shape[1:])).astype(np.float32)
    cfg = ReportConfig(preset="quick", frames=1, cascade_steps=3)

    def estimate(method):
        graph = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers,
                                             SegmentationExplainConfig(methods=(method,), paths=PathOptions()))
        return estimate_seconds(cfg, model, card, x, False, graph.model)

    gradient, path = estimate("gradient"), estimate("integrated_gradients")
    assert 5.5 < gradient["explain_graph_forwards"] < 7  # 1 forward and 5 backwards of about one forward each
    ratio = path["explain_graph_forwards"] / gradient["explain_graph_forwards"]
    assert abs(ratio - 17) < 0.2, ratio  # each point's input arithmetic is not in the bound: 17 copies exactly
    runs = cfg.frames + 2 * cfg.cascade_steps + 4 + cfg.sensitivity_draws + 1  # the evaluation's noisy copies too
    grown = path["sections_s"]["segmentation"] / path["forward16_s"] - \
        gradient["sections_s"]["segmentation"] / gradient["forward16_s"]
    assert grown > runs * 90 / 16  # every run of the graph holds at least 90 more forwards' worth (102 - 6)


def test_sanity_reading_follows_the_numbers():
    """The report reads each method's cascade from its own values instead of stating an expectation."""
    from hsi_xai_node.reliability.report import sanity_reading

    def row(depth, **methods):
        return {"depth": depth, "methods": {m: {"spearman": sp, "ssim": ss} for m, (sp, ss) in methods.items()}}

    cascade = [row(1, good=(0.11, 0.6), bad=(0.95, 0.9), mixed=(0.2, 0.5)),
               row(9, good=(0.13, 0.36), bad=(0.8, 0.85), mixed=(0.45, 0.4))]
    text = sanity_reading(cascade)
    assert "<b>good</b>: Spearman +0.11 with the first 1 layer(s) random, +0.13 with 9; at every depth |Spearman| " \
           "is below 0.3" in text
    assert "<b>bad</b>: Spearman +0.95" in text and "still ranks pixels like the trained model" in text
    assert "<b>mixed</b>" in text and "largest 0.45): it only partly depends on the learnt weights" in text
    assert "SSIM stays between 0.36 and 0.85 once layers are random" in text and "cannot tell trained from random" \
        in text
    assert "towards 0" not in text


def test_the_input_attributions_add_up_and_the_gallery_shows_every_method(report):
    """Section 1's second table: DeepLIFT sums to S(x) - S(x0) to float rounding, integrated gradients with 2 steps
    misses by its quadrature error, LRP-epsilon keeps what the biases absorb; section 5: one class's maps of every
    method, the input attributions' band spectra, one detector box's maps."""
    out, r = report
    cons = r["input_conservation"]
    assert set(cons) == {"lrp_epsilon", "integrated_gradients", "deeplift"}  # the conserving ones of those run
    assert cons["deeplift"]["max"] < 1e-3 and cons["deeplift"]["rows"] >= 3
    assert cons["integrated_gradients"]["max"] > cons["deeplift"]["max"]  # 2 trapezoid steps on a ReLU net
    assert np.isfinite(cons["lrp_epsilon"]["median"]) and "biases" in cons["lrp_epsilon"]["target"]
    g = r["gallery"]
    assert set(g["methods"]) == {*SEG_METHODS, *INPUTS} and g["pixels"] > 0
    assert set(g["spectra"]) == set(INPUTS) and all(len(v) == 25 for v in g["spectra"].values())
    assert all(abs(np.abs(v).sum() - 1.0) < 1e-6 for v in g["spectra"].values())  # each normalised
    assert set(r["detection_gallery"]["methods"]) == set(BOX_REPORT_ROWS)
    page = (out / "index.html").read_text()
    for name in ("gallery_segmentation.png", "gallery_spectra.png", "gallery_detection.png"):
        assert (out / name).is_file() and name in page
    assert page.index("do they add up") < page.index("2. Sanity checks") < page.index("5. Method gallery")


def test_which_method_to_trust(report):
    """Section 6 on one frame: every method ranked on every metric it has, against the generated regions."""
    out, r = report
    ev = r["evaluation"]["segmentation"]
    methods = ev["summary"]["methods"]
    assert set(methods) == {*SEG_METHODS, *INPUTS, "rise", "sidu"}
    assert ev["frames"][0]["drive_seed"] == 2000 and ev["frames"][0]["classes"]  # the scored regions, named
    for m in {*SEG_METHODS, *INPUTS}:
        v = ev["table"][m]
        assert v["regions"] == len(ev["frames"][0]["classes"])
        assert all(0.0 <= v[k] <= 1.0 for k in ("pointing_game", "relevance_rank", "roc_auc", "sim", "sparseness"))
        assert np.isfinite(v["aopc"]) and v["max_sensitivity"] >= 0 and np.isfinite(v["seconds_per_map"])
        assert v["model_randomisation"] >= 0 and -1 <= v["random_logit"] <= 1
    # Seg-Grad-CAM (signed) at the layer before the final 1x1 conv is the activation map times a positive number
    # per class: every localisation measure here is scale-free, so the two rows agree
    for k in ("pointing_game", "relevance_mass", "relevance_rank", "roc_auc", "pcc", "sim", "ssim", "l1", "sparseness"):
        signed, activation = ev["table"]["seg_gradcam_signed"][k], ev["table"]["activation"][k]
        assert signed == pytest.approx(activation, rel=1e-6, abs=1e-9), k
    # spectral localisation exists exactly for the methods with per-band totals: the input attributions
    assert {m for m in methods if np.isfinite(ev["table"][m].get("spectral", np.nan))} <= set(INPUTS)
    assert all("label_randomisation_pass" in v for v in ev["randomisation"].values())  # the permuted-label model
    assert ev["verdict"][0].startswith("Localisation (ROC AUC of the map against the generated class regions): best ")
    det = r["evaluation"]["detection"]
    assert set(det["summary"]["methods"]) == {*BOX_REPORT_ROWS, "rise", "sidu"}
    assert det["randomisation_note"].startswith("on the kept boxes of the first frame with any")
    for m in BOX_REPORT_ROWS:  # the tiny detector's random weights against random weights: both checks measured
        v = det["randomisation"][m]
        assert 0 <= v["model_randomisation"] <= 1 and -1 <= v["random_logit"] <= 1
        assert v["model_randomisation_pass"] is (v["model_randomisation"] < 0.5)
    rb = det["robustness"]  # one noisy copy of the first frame with kept boxes: used, or counted as changing them
    assert rb["draws"] == 1 and rb["boxes"] >= 1
    measured = {m for m, v in det["table"].items() if "max_sensitivity" in v}
    assert measured == (set() if rb["draws_with_other_boxes"] else set(BOX_REPORT_ROWS))
    page = (out / "index.html").read_text()
    assert "6. Which explanation to trust" in page and ev["verdict"][0].split(":")[0] in page


def test_the_detector_sanity_checks_explain_the_boxes_nms_kept(tiny_detector, hsi_drive):
    """The explain graph with the explained pairs as inputs gives, for NMS's own pairs, the maps the pipeline's graph
    gives; explaining them on the detector with every layer random gives other maps, and another class at the same
    anchor another map (the report's model randomisation and random logit for the detector)."""
    from hsi_xai_node.reliability.config import ReportConfig
    from hsi_xai_node.reliability.report import (BOX_LEVEL_ROW, REPORT_BOX_LAYER, _given_boxes_explainer,
                                                 box_randomisation)
    from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig
    from hsi_xai_node.runtime.engine import open_engine
    from hsi_xai_node.scenes.drive import DriveGenerator

    methods = ("box_gradcam", "box_gradient")
    pipeline = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), explain_boxes=3, methods=methods,
                                                         threads=1, layer=REPORT_BOX_LAYER))
    frame = DriveGenerator(hsi_drive, seed=2000, render_cameras=True).frame(30)
    x = pipeline.frontend({n: c.image for n, c in frame.cameras.items()})
    card = pipeline.card
    full = {o.method.removesuffix("_full"): n for n, o in pipeline.graph.outputs.items()
            if o.method.removesuffix("_full") in methods and o.dtype == "float32"
            and tuple(o.shape[2:]) == card.input.hw}
    out = open_engine(pipeline.graph.model.SerializeToString(), "ort-cpu", "fp32", threads=1,
                      outputs_to_copy=["det_pairs", "det_boxes", *full.values()]).run({card.input.tensor: x})
    pairs = [int(p) for p in out["det_pairs"][0][:3] if p >= 0]
    assert pairs, "the test detector keeps boxes on this frame"
    cfg = ReportConfig(threads=1)
    engine, given = _given_boxes_explainer(pipeline.loaded.model, card, len(pairs), methods, cfg)
    mine = engine.run({card.input.tensor: x, "explain_pairs": np.array([pairs], np.int64),
                       "explain_boxes": out["det_boxes"][:, :len(pairs)].astype(np.float32)})
    for m in methods:  # one graph builder, the same pairs: the same maps
        np.testing.assert_allclose(mine[given[m]], out[full[m]][:len(pairs)], rtol=1e-5, atol=1e-7 * np.abs(
            out[full[m]]).max())
    # the row of the detection node's default map: its pipeline's Grad-CAM at each box's level, for the same boxes
    node = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), explain_boxes=3, threads=1, box_maps=True))
    assert node.config.layer == "box_level"
    engine, given = _given_boxes_explainer(pipeline.loaded.model, card, len(pairs), [BOX_LEVEL_ROW], cfg)
    level = engine.run({card.input.tensor: x, "explain_pairs": np.array([pairs], np.int64),
                        "explain_boxes": out["det_boxes"][:, :len(pairs)].astype(np.float32)})[given[BOX_LEVEL_ROW]]
    shown = node.process({n: c.image for n, c in frame.cameras.items()}).box_maps[:len(pairs)]
    np.testing.assert_allclose(level[:, 0], shown, rtol=1e-5, atol=1e-7 * np.abs(shown).max())
    checks = box_randomisation(cfg, pipeline.loaded.model, card, x, pairs, out["det_boxes"][0], methods)
    assert set(checks) == set(methods), checks
    for v in checks.values():  # measured 0.20 / 0.71 and 0.52 / 0.91 (box_gradcam / box_gradient): not the same maps
        assert 0 <= v["model_randomisation"] < 0.95 and -1 <= v["random_logit"] < 0.98
