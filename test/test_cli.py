"""The command line's surface: every command listed, every option described with its default, no heavy
imports to print help, and bad settings as one line naming the file and the parameter."""

import argparse
import subprocess
import sys

import pytest

from hsi_xai_node.cli import build_parser, main

COMMANDS = {"profiles", "demo", "replay", "fleet", "train-segmentation", "train-detection", "build-engine",
            "calibrate-overlays", "reliability", "import-model",
            "evaluate", "bag-from-frames"}


def _subparsers(parser):
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert set(_subparsers(build_parser())) == COMMANDS
    assert all(f"    {c}" in out for c in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_a_description_and_shows_its_default(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (argparse breaks lines at hyphens)
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest}: no help text"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help text unwrapped
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"default: {action.default}" in text or f"default {action.default}" in text \
                or "(default" in (action.help or ""), f"{command} {action.option_strings}: default not shown"


def test_help_imports_nothing_heavy():
    code = ("import sys; from hsi_xai_node.cli import build_parser; build_parser()\n"
            "heavy = [m for m in ('numpy', 'onnx', 'onnxruntime', 'cv2', 'torch', 'rosbags', 'matplotlib', 'yaml')"
            " if m in sys.modules]\nprint(heavy)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


def test_a_bad_config_is_one_line_naming_the_file_and_the_parameter(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**/hsi_xai:\n  ros__parameters:\n    overlay_alpha: 2.0\n")
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hsi-xai replay: error: config {bad}: parameter overlay_alpha: Input should be less than or "
                   "equal to 1 (got 2.0)")
    bad.write_text("/**/hsi_xai:\n  ros__parameters:\n    model: /nope.onnx\n")
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"config {bad}: parameter model: '/nope.onnx' is not an existing file")
    # --model and --methods override the parameter file's (an imported model is run without editing it)
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "/also-nope.onnx"]) == 2
    assert capsys.readouterr().err.strip().endswith("parameter model: '/also-nope.onnx' is not an existing file")
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out"), "--methods", "seg_gradcam,wavelet"]) == 2
    assert "methods ['wavelet'] unknown" in capsys.readouterr().err


def test_reliability_quick_preset_and_explicit_options(monkeypatch, tmp_path):
    pytest.importorskip("skimage", reason="the reliability report needs scikit-image")
    from hsi_xai_node.reliability import report

    seen = {}
    monkeypatch.setattr(report, "run_report", lambda out, cfg, log, progress: seen.update(cfg=cfg))
    assert main(["reliability", "--out", str(tmp_path), "--quick", "--rise-masks", "50", "--no-progress"]) == 0
    cfg = seen["cfg"]
    assert (cfg.frames, cfg.rise_masks, cfg.perturbation_steps, cfg.cascade_steps) == (1, 50, 8, 3)
    assert main(["reliability", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (seen["cfg"].frames, seen["cfg"].rise_masks) == (3, 500)
    assert main(["reliability", "--out", str(tmp_path), "--frames", "0"]) == 2


def test_path_problems_are_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["reliability", "--out", str(tmp_path / "a_file" / "report"), "--quick", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hsi-xai reliability: error: ") and "a_file" in err and "\n" not in err
    assert main(["profiles", str(tmp_path / "missing.xml")]) == 2
    assert "no such file" in capsys.readouterr().err
