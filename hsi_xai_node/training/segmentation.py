"""Train, evaluate and export the segmentation U-Nets (paper 000's 1 / 3 / 25-band study).

    hsi-xai train-segmentation --out models                     # the bundled study (1, 3, 25pn, 25)
    hsi-xai train-segmentation --variants 25pn --size hsi-drive --out /tmp/full   # 7.8M params

Training: random crops of generated drives (split by seed, see data.py) with
illumination and shadow augmentation, class-weighted cross-entropy, Adam with a
cosine schedule, evaluation on the validation drives every `eval_every` steps, early
stopping on validation mIoU, best weights kept. Evaluation: per-class IoU and
accuracy on the held-out test drives, over all pixels and over sunlit and shaded
pixels separately.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import SEGMENTATION_CLASSES
from ..metrics import confusion, percent, scores
from ..model_card import CARD_SCHEMA, ClassSpec, InputSpec, ModelCard, file_sha256
from ..sensor.calibration import SensorProfile
from .config import SIZES, TrainConfig
from .data import VARIANTS, DriveSet, Variant, augment, centre_window, class_weights, shadow_ratio
from .unet import UNet, UNetConfig, parameter_count

#: Class ids 1..5 ride in logits channels 0..4.
CLASSES = tuple(c for c in SEGMENTATION_CLASSES if c.id > 0)
SUN, SHADE = 0.9, 0.1  # sun-share thresholds for "sunlit" and "shaded" pixels


@dataclass
class TrainResult:
    model: UNet
    variant: Variant
    best_val_miou: float
    steps_run: int
    seconds: float
    history: list = field(default_factory=list)


def _to_torch_labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64) - 1)  # label 0 -> -1 (ignored)


def predict(model: UNet, x: np.ndarray, batch: int = 4) -> np.ndarray:
    """(n, bands, h, w) -> label ids (n, h, w) uint8."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy().astype(np.uint8) + 1)
    return np.concatenate(out)


def evaluate(pred: np.ndarray, data: DriveSet, window) -> dict:
    """Scores over all, sunlit and shaded pixels of the model window (all only, for a dataset without sun maps)."""
    top, left, h, w = window
    truth = data.labels[:, top:top + h, left:left + w]
    names = {c.id: c.name for c in data.classes}
    n = max(names) + 1
    out = {"all": scores(confusion(truth, pred, n), names)}
    if data.sun is not None:
        sun = data.sun[:, top:top + h, left:left + w].astype(np.float32) / 255.0
        out["sun"] = scores(confusion(truth, pred, n, sun >= SUN), names)
        out["shadow"] = scores(confusion(truth, pred, n, sun <= SHADE), names)
    return out


def train(variant: Variant, train_set: DriveSet, val_set: DriveSet, unet: UNetConfig, cfg: TrainConfig,
          ratio: np.ndarray, log=print) -> TrainResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = UNet(unet)
    window = centre_window(*val_set.labels.shape[1:], model.multiple)
    top, left, h, w = window
    val_x = variant.transform(val_set.reflectance[:, :, top:top + h, left:left + w], val_set.wavelengths_nm)
    weights = torch.from_numpy(class_weights(train_set.labels, unet.num_classes))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    ch, cw = cfg.crop
    n, _, H, W = train_set.reflectance.shape
    best, best_state, stale, history = -1.0, None, 0, []
    t0 = time.perf_counter()
    step = 0
    for step in range(1, cfg.steps + 1):
        idx = rng.integers(0, n, cfg.batch)
        ys, xs = rng.integers(0, H - ch + 1, cfg.batch), rng.integers(0, W - cw + 1, cfg.batch)
        refl = np.stack([train_set.reflectance[i, :, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)]
                        ).astype(np.float32)
        labels = np.stack([train_set.labels[i, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)])
        flip = rng.random(cfg.batch) < 0.5  # left-right mirror: roads have two sides
        refl[flip] = refl[flip][..., ::-1]
        labels[flip] = labels[flip][..., ::-1]
        x = torch.from_numpy(variant.transform(augment(refl, rng, ratio), train_set.wavelengths_nm))
        model.train()
        loss = F.cross_entropy(model(x), _to_torch_labels(labels), weight=weights, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = evaluate(predict(model, val_x), val_set, window)["all"]["miou"]
            history.append({"step": step, "loss": loss.item(), "val_miou": val,
                            "seconds": round(time.perf_counter() - t0, 1)})
            log(f"  [{variant.name}] step {step:4d} loss {loss.item():.3f} val mIoU {val:.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
            if val > best:
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    log(f"  [{variant.name}] early stop: no improvement in {cfg.patience} evaluations")
                    break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, variant, best, step, time.perf_counter() - t0, history)


# --- export -----------------------------------------------------------------------------------

def export_onnx(model: UNet, path: Path, shape: tuple[int, ...], opset: int = 17) -> None:
    """Export at a fixed input shape, with the block outputs renamed to their block names."""
    import onnx

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notices
        torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
    m = onnx.load(str(path))
    rename = {}
    for block in model.layer_names()[:-1]:
        last = [n for n in m.graph.node if n.name.startswith(f"/{block}/")][-1]
        rename[last.output[0]] = block
    for node in m.graph.node:
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    m.producer_name = "hsi_xai_node"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def write_model(result: TrainResult, profile: SensorProfile, window, out_dir: Path, name: str,
                metrics: dict, training: dict, classes=CLASSES) -> tuple[Path, ModelCard]:
    """ONNX file + card, named `<name>.onnx` / `<name>.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    top, left, h, w = window
    variant = result.variant
    band_idx = variant.bands(profile.band_wavelengths_nm)
    n_bands = len(band_idx)
    onnx_path = out_dir / f"{name}.onnx"
    export_onnx(result.model, onnx_path, (1, n_bands, h, w))
    d = result.model.config.depth
    layers = {name: name for name in result.model.layer_names()[:-1]}
    layers.update({"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck"})
    card = ModelCard(
        name=name, task="segmentation", file=onnx_path.name, sha256=file_sha256(onnx_path),
        sensor_profile=profile.name,
        input=InputSpec(tensor="input", shape=(1, n_bands, h, w),
                        bands_nm=tuple(float(v) for v in profile.band_wavelengths_nm[band_idx]),
                        normalise="pn" if variant.normalise else "none", scale=variant.scale(n_bands),
                        crop_top=top, crop_left=left),
        classes=tuple(ClassSpec(i, c.id, c.name, tuple(int(v) for v in c.bgr)) for i, c in enumerate(classes)),
        logits="logits", layers=layers,
        architecture={"type": "unet", **result.model.config.to_dict(),
                      "parameters": parameter_count(result.model),
                      "blocks": "2x(3x3 conv + BN + ReLU), 2x2 max-pool, 2x2 stride-2 transposed conv, "
                                "skip concatenation, final 1x1 conv (BN folded into conv at export)",
                      "depth_levels": d},
        training=training, metrics=metrics, schema=CARD_SCHEMA,
    )
    (out_dir / f"{name}.json").write_text(card.to_json())
    return onnx_path, card


def summary_table(results: dict, classes=CLASSES) -> str:
    """Markdown: per-class accuracy / IoU per variant, and sun vs shadow mIoU (where there are sun maps)."""
    names = [c.name for c in classes]
    lines = ["| variant | " + " | ".join(names) + " | mean | pixel acc. |",
             "| --- |" + " --- |" * (len(names) + 2)]
    for key, m in results.items():
        a = m["all"]
        cells = [f"{percent(a['accuracy'][n])} / {percent(a['iou'][n])}" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells)
                     + f" | {percent(a['mean_accuracy'])} / {percent(a['miou'])} | {percent(a['pixel_accuracy'])} |")
    if not all("sun" in m for m in results.values()):
        return "\n".join(lines)
    lines += ["", "| variant | mIoU, sunlit pixels | mIoU, shaded pixels | pixel acc. sunlit | pixel acc. shaded |",
              "| --- | --- | --- | --- | --- |"]
    for key, m in results.items():
        lines.append(f"| {key} | {100 * m['sun']['miou']:.1f} | {100 * m['shadow']['miou']:.1f} | "
                     f"{100 * m['sun']['pixel_accuracy']:.1f} | {100 * m['shadow']['pixel_accuracy']:.1f} |")
    return "\n".join(lines)


def run_study(profile: SensorProfile, variants: list[str], size: str, out_dir: Path, cfg: TrainConfig,
              splits=None, command: str = "", bundle: tuple[str, ...] = ("1", "3", "25pn"), log=print,
              datasets: dict | None = None, classes=CLASSES) -> dict:
    """Train, evaluate on the test split and export each variant. `datasets` (train/val/test readers of a
    labelled dataset whose labels are `classes`, datasets.HsiDriveMmseg or HsiDriveMat) replaces the generated
    drives; its validation split also gives the overlay scales."""
    from .data import DEFAULT_SPLITS, from_dataset, generate

    t0 = time.perf_counter()
    generated = datasets is None
    if generated:
        splits = splits or DEFAULT_SPLITS
        data = {k: generate(profile, s) for k, s in splits.items()}
    else:
        data = {k: from_dataset(r, profile.band_wavelengths_nm, classes, log) for k, r in datasets.items()}
    log(f"data {', '.join(f'{k}: {len(v)} frames' for k, v in data.items())} in {time.perf_counter() - t0:.0f} s")
    classes = data["train"].classes
    ratio = shadow_ratio(profile)
    results, cards = {}, {}
    for key in variants:
        variant = VARIANTS[key]
        n_bands = len(variant.bands(profile.band_wavelengths_nm))
        unet = UNetConfig(in_channels=n_bands, num_classes=len(classes), base_filters=SIZES[size])
        result = train(variant, data["train"], data["val"], unet, cfg, ratio, log)
        window = centre_window(*data["test"].labels.shape[1:], result.model.multiple)
        top, left, h, w = window
        test_x = variant.transform(data["test"].reflectance[:, :, top:top + h, left:left + w],
                                   data["test"].wavelengths_nm)
        metrics = evaluate(predict(result.model, test_x), data["test"], window)
        results[key] = metrics
        shade = (f" (sun {metrics['sun']['miou']:.3f}, shadow {metrics['shadow']['miou']:.3f})"
                 if "sun" in metrics else "")
        log(f"  [{key}] test mIoU {metrics['all']['miou']:.3f}{shade}, {result.steps_run} steps in "
            f"{result.seconds:.0f} s")
        if key in bundle:
            training = {"data": ("generated drives (hsi_xai_node.scenes), split by seed" if generated else
                                 {k: v.source for k, v in data.items()}),
                        "augmentation": "illumination x U(0.6, 1.4); shadow blobs with the daylight "
                                        "shadow/sun band ratio; left-right flips",
                        "loss": "class-weighted cross-entropy (1/sqrt frequency)",
                        "config": cfg.__dict__ | {"crop": list(cfg.crop)}, "steps_run": result.steps_run,
                        "seconds": round(result.seconds, 1), "best_val_miou": result.best_val_miou,
                        "seed": cfg.seed, "command": command, "torch": torch.__version__}
            if generated:
                training["splits"] = {k: {"seeds": list(s.seeds), "frames_per_seed": s.frames_per_seed,
                                          "stride": s.stride} for k, s in splits.items()}
            name = f"unet_{size.replace('-', '_')}_{key}"
            path, cards[key] = write_model(result, profile, window, out_dir, name,
                                           {"test_generated" if generated else "test_dataset": metrics}, training,
                                           classes)
            from ..overlay_calibration import segmentation_overlay_scales, write_overlay_scales

            # on the validation drives, or the dataset's validation split
            scales = segmentation_overlay_scales(path, profile=profile.name,
                                                 dataset=None if generated else datasets["val"],
                                                 values=None if generated else "reflectance")
            write_overlay_scales(path.with_suffix(".json"), scales)
            cards[key].overlay_scales = scales
    (out_dir / f"segmentation_study_{size}.json").write_text(json.dumps(
        {"profile": profile.name, "size": size, "command": command, "results": results,
         "data": {k: v.source for k, v in data.items()}}, indent=1))
    source = "the held-out generated test drives" if generated else data["test"].source
    (out_dir / f"segmentation_study_{size}.md").write_text(
        f"# Segmentation study ({size} size, {profile.name})\n\nCommand: `{command}`\n\n"
        f"Per class: accuracy / IoU (%) on {source}.\n\n"
        + summary_table(results, classes) + "\n")
    return results
