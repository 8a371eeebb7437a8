"""Label randomisation (Adebayo et al. 2018): permuted labels and a tiny U-Net trained on them (needs torch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install -e '.[train]')")

from hsi_xai_node.training import random_labels  # noqa: E402
from hsi_xai_node.training.config import TrainConfig  # noqa: E402
from hsi_xai_node.training.data import VARIANTS, DriveSet  # noqa: E402
from hsi_xai_node.training.unet import UNetConfig  # noqa: E402


def drive_set(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, (n, 32, 48)).astype(np.uint8)
    labels[:, :8] = 5  # some structure: a "sky" band on top
    return DriveSet(rng.uniform(0.05, 1, (n, 25, 32, 48)).astype(np.float16), labels,
                    np.full((n, 32, 48), 255, np.uint8), np.linspace(600, 975, 25))


def test_permute_pixels_keeps_counts_and_unlabelled_pixels():
    labels = drive_set(3, 0).labels
    out = random_labels.permute_labels(labels, np.random.default_rng(1), "pixels")
    assert out.shape == labels.shape and out.dtype == labels.dtype
    np.testing.assert_array_equal(out == 0, labels == 0)
    np.testing.assert_array_equal(np.bincount(out.ravel(), minlength=6), np.bincount(labels.ravel(), minlength=6))
    labelled = labels != 0
    assert (out[labelled] == labels[labelled]).mean() < 0.4  # the sky band no longer matches its pixels
    np.testing.assert_array_equal(out, random_labels.permute_labels(labels, np.random.default_rng(1), "pixels"))


def test_permute_frames_moves_whole_maps():
    labels = drive_set(4, 0).labels
    out = random_labels.permute_labels(labels, np.random.default_rng(2), "frames")
    matches = [[np.array_equal(o, a) for a in labels] for o in out]
    assert all(sum(m) == 1 for m in matches) and sorted(m.index(True) for m in matches) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="mode"):
        random_labels.permute_labels(labels, np.random.default_rng(0), "classes")


def test_train_with_random_labels_trains_on_permuted_copies(monkeypatch):
    torch.set_num_threads(1)
    train_set, val_set = drive_set(3, 0), drive_set(2, 1)
    before = train_set.labels.copy(), val_set.labels.copy()
    seen = {}
    real_train = random_labels.train

    def spy(variant, tr, va, *args, **kwargs):
        seen["train"], seen["val"] = tr.labels, va.labels
        return real_train(variant, tr, va, *args, **kwargs)

    monkeypatch.setattr(random_labels, "train", spy)
    cfg = TrainConfig(steps=2, batch=2, crop=(16, 16), eval_every=1, patience=4, threads=1)
    result = random_labels.train_with_random_labels(
        VARIANTS["25pn"], train_set, val_set, UNetConfig(in_channels=25, num_classes=5, depth=2, base_filters=2),
        cfg, np.ones(25, np.float32), seed=3, log=lambda *_: None)
    np.testing.assert_array_equal(train_set.labels, before[0])  # the caller's sets are untouched
    np.testing.assert_array_equal(val_set.labels, before[1])
    for key, orig in (("train", before[0]), ("val", before[1])):
        got = seen[key]
        assert not np.array_equal(got, orig)
        np.testing.assert_array_equal(np.sort(got.ravel()), np.sort(orig.ravel()))
    assert result.steps_run == 2 and result.model(torch.zeros(1, 25, 16, 16)).shape == (1, 5, 16, 16)
