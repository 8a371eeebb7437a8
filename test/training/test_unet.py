"""The U-Net, its ONNX export and the training command (needs torch)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")
ort = pytest.importorskip("onnxruntime")

from hsi_xai_node.errors import InputError  # noqa: E402
from hsi_xai_node.model_card import load_model  # noqa: E402
from hsi_xai_node.training.config import TrainConfig  # noqa: E402
from hsi_xai_node.training.data import Split  # noqa: E402
from hsi_xai_node.training.segmentation import export_onnx, run_study  # noqa: E402
from hsi_xai_node.training.unet import UNet, UNetConfig, parameter_count  # noqa: E402


def expected_parameters(c: UNetConfig) -> int:
    """Counted by hand from the architecture: conv weights, BN scale+shift, up-conv and head biases."""
    def block(cin, cout):
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
    f = [c.base_filters * 2 ** i for i in range(c.depth + 1)]
    total, cin = 0, c.in_channels
    for level in range(c.depth):
        total += block(cin, f[level])
        cin = f[level]
    total += block(cin, f[c.depth])
    for level in range(c.depth - 1, -1, -1):
        total += 4 * f[level + 1] * f[level] + f[level]  # 2x2 transposed conv + bias
        total += block(2 * f[level], f[level])
    return total + f[0] * c.num_classes + c.num_classes


@pytest.mark.parametrize("cfg", [UNetConfig(), UNetConfig(3, 5, 4, 12), UNetConfig(1, 6, 2, 8)])
def test_parameter_count_matches_hand_count(cfg):
    assert parameter_count(UNet(cfg)) == expected_parameters(cfg)


def test_hsi_drive_default_is_7_8m_parameters():
    assert parameter_count(UNet()) == 7_769_509


def _random_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_onnx_runtime_equals_pytorch_and_block_tensors_are_named(tmp_path):
    cfg = UNetConfig(in_channels=5, num_classes=5, depth=3, base_filters=6)
    model = UNet(cfg)
    _random_bn(model)
    model.eval()
    path = tmp_path / "u.onnx"
    export_onnx(model, path, (1, 5, 32, 48))
    x = np.random.default_rng(1).standard_normal((1, 5, 32, 48)).astype(np.float32)
    captured = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o.detach().numpy()))
             for n in model.layer_names()[:-1]]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    import onnx
    m = onnx.load(str(path))
    names = model.layer_names()[:-1]
    assert names == ["enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1"]
    for n in names:  # expose each block tensor as an output to read it back
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    assert {n.op_type for n in m.graph.node} == {"Conv", "Relu", "MaxPool", "ConvTranspose", "Concat"}  # BN folded
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    np.testing.assert_allclose(outs["logits"], ref, rtol=1e-4, atol=1e-4)
    for n in names:
        np.testing.assert_allclose(outs[n], captured[n], rtol=1e-4, atol=1e-4, err_msg=n)


def test_tiny_training_run_writes_loadable_models(tmp_path, hsi_drive):
    splits = {"train": Split((0, 1), 2, 10), "val": Split((1000,), 2, 10), "test": Split((2000,), 2, 10)}
    results = run_study(hsi_drive, ["25pn", "1"], "tiny", tmp_path,
                        TrainConfig(steps=6, batch=2, crop=(48, 64), eval_every=3), splits=splits,
                        command="test", bundle=("25pn",), log=lambda m: None)
    assert set(results) == {"25pn", "1"}
    for r in results.values():
        assert 0.0 <= r["all"]["miou"] <= 1.0
    loaded = load_model(tmp_path / "unet_tiny_25pn.onnx", profile=hsi_drive)
    card = loaded.card
    assert card.input.shape == (1, 25, 208, 400) and (card.input.crop_top, card.input.crop_left) == (4, 4)
    assert card.input.normalise == "pn" and card.input.scale == 25.0
    assert card.layers["penultimate"] == "dec1" and card.layers["second_conv_block"] == "enc1"
    assert card.training["steps_run"] == 6 and card.training["splits"]["test"]["seeds"] == [2000]
    assert card.metrics["test_generated"]["all"]["miou"] == results["25pn"]["all"]["miou"]
    assert not (tmp_path / "unet_tiny_1.onnx").exists()  # not in the bundle list
    table = (tmp_path / "segmentation_study_tiny.md").read_text()
    assert "| 25pn |" in table and "| 1 |" in table
    assert json.loads((tmp_path / "segmentation_study_tiny.json").read_text())["size"] == "tiny"


def test_training_on_hsi_drive_in_mmsegmentation_layout(tmp_path, hsi_drive, capsys):
    """HSI-Drive v2.0's layout with reflectance cubes (two training, one validation, one test frame of generated
    drives, 5-class labels): trained, evaluated on the dataset's test split, exported with a card naming the data,
    overlay scales from its validation split; `hsi-xai evaluate` on the same split counts the same pixels and,
    through ONNX Runtime and the card's normalisation, agrees with the training's own figure."""
    from types import SimpleNamespace

    import cv2

    from hsi_xai_node.cli import main
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.frontend import FrontEnd, FrontEndConfig
    from hsi_xai_node.training.cli import hsi_drive_splits
    from hsi_xai_node.training.data import from_dataset

    root = tmp_path / "HSIDrive20"
    for split, seed, count in (("training", 0, 2), ("validation", 1000, 1), ("test", 2000, 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        gen = DriveGenerator(hsi_drive, seed=seed, render_cameras=False)
        fe = FrontEnd(hsi_drive, *gen.references(), FrontEndConfig(normalise=False))
        for k in range(count):
            frame = gen.frame(10 * k)
            np.save(root / "images" / split / f"nf{seed}_{k}.npy", fe.process(frame.raw).cube.data.transpose(1, 2, 0))
            cv2.imwrite(str(root / "annotations" / split / f"nf{seed}_{k}.png"), frame.labels)
    args = SimpleNamespace(dataset=str(root), layout=None, values="reflectance", classes="hsi-drive", mat_axes="chw")
    readers, classes = hsi_drive_splits(args)
    data = {k: from_dataset(r, hsi_drive.band_wavelengths_nm, classes, log=lambda m: None) for k, r in readers.items()}
    assert [len(data[k]) for k in ("train", "val", "test")] == [2, 1, 1] and data["test"].sun is None
    out = tmp_path / "models"
    results = run_study(hsi_drive, ["25pn"], "tiny", out, TrainConfig(steps=4, batch=2, crop=(48, 64), eval_every=2),
                        command="test", bundle=("25pn",), log=lambda m: None, datasets=readers, classes=classes)
    assert set(results["25pn"]) == {"all"}  # no sun maps in a dataset: no sunlit/shaded split
    card = load_model(out / "unet_tiny_25pn.onnx", profile=hsi_drive).card
    assert card.training["data"]["test"].startswith(f"HSI-Drive v2.0 (mmsegmentation layout) {root}, split test")
    assert "splits" not in card.training and card.metrics["test_dataset"] == results["25pn"]
    assert card.overlay_scales["hires@dec1"]["dataset"].endswith("split validation, 1 cubes")
    assert "Per class: accuracy / IoU (%) on HSI-Drive v2.0" in (out / "segmentation_study_tiny.md").read_text()
    assert main(["evaluate", str(out / "unet_tiny_25pn.onnx"), "--dataset", str(root), "--values", "reflectance",
                 "--out", str(tmp_path / "e.json"), "--no-progress"]) == 0
    capsys.readouterr()
    figures = json.loads((tmp_path / "e.json").read_text())["scores"]
    assert figures["pixels"] == results["25pn"]["all"]["pixels"]
    assert figures["miou"] == pytest.approx(results["25pn"]["all"]["miou"], abs=0.02)
    # a dataset whose cubes are the model's values cannot be trained on (the card could not state its normalisation)
    with pytest.raises(InputError, match="needs reflectance cubes"):
        hsi_drive_splits(SimpleNamespace(**{**vars(args), "values": None}))
