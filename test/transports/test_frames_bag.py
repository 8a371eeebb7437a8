"""`hsi-xai bag-from-frames`: raw frame files as HSI-Drive ships them (.bin) and in the other two forms, the
references averaged from a folder, stamps from a file; the bag read back with an independent reader (mcap +
mcap_ros2) and replayed through the node's pipeline."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from hsi_xai_node.cli import main
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.transports.config import NodeConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory, hsi_drive):
    """A frames folder (.bin, .npy, .png and one truncated .bin), a dark folder of two frames, a white .png."""
    root = tmp_path_factory.mktemp("frames_bag")
    gen = DriveGenerator(hsi_drive, seed=4001, render_cameras=False)
    dark, white = gen.references()
    frames = [gen.frame(k).raw for k in range(3)]
    (root / "frames").mkdir()
    frames[0].astype("<u2").tofile(root / "frames" / "nf1111_001.bin")
    np.save(root / "frames" / "nf1111_002.npy", frames[1])
    cv2.imwrite(str(root / "frames" / "nf1111_003.png"), frames[2])
    (root / "frames" / "nf1111_004.bin").write_bytes(frames[0].astype("<u2").tobytes()[:1000])  # truncated
    (root / "dark").mkdir()
    darks = [np.clip(dark.astype(np.int32) + d, 0, 1023).astype(np.uint16) for d in (0, 3)]
    for k, d in enumerate(darks):
        d.astype("<u2").tofile(root / "dark" / f"d{k}.bin")
    cv2.imwrite(str(root / "white.png"), white)
    (root / "stamps.txt").write_text("# frame stamps\n1700000000000000000\n1700000000.04\n1700000000080000000\n"
                                     "1700000000.12\n")
    return root, frames, np.round((darks[0].astype(np.float64) + darks[1]) / 2).astype(np.uint16), white


def decoded(bag: Path):
    (file,) = bag.glob("*.mcap")
    with open(file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        qos = {c.topic: c.metadata.get("offered_qos_profiles", "") for c in reader.get_summary().channels.values()}
        return [(c.topic, msg.log_time, d) for _, c, msg, d in reader.iter_decoded_messages()], qos


def image(msg) -> np.ndarray:
    assert msg.encoding == "mono16" and msg.header.frame_id == "hsi_camera"
    return np.frombuffer(bytes(msg.data), "<u2" if not msg.is_bigendian else ">u2").reshape(msg.height, msg.width)


def test_frames_references_and_stamps_round_trip(files, tmp_path, capsys):
    root, frames, dark, white = files
    out = tmp_path / "bag"
    assert main(["bag-from-frames", str(root / "frames"), str(out), "--dark", str(root / "dark"), "--white",
                 str(root / "white.png"), "--stamps", str(root / "stamps.txt")]) == 0
    text = capsys.readouterr().out
    assert "3 raw frames" in text and "skipped (unreadable or wrong-sized frame file): 1" in text
    assert "nf1111_004.bin: 1000 bytes, a 2048x1088 uint16 frame is 4456448" in text
    messages, qos = decoded(out)
    cfg = NodeConfig().resolved()
    raw = [(t, image(msg)) for topic, t, msg in messages if topic == cfg.raw_topic]
    assert [t for t, _ in raw] == [1700000000000000000, 1700000000040000000, 1700000000080000000]
    for (_, got), want in zip(raw, frames):
        assert (got == want).all()
    refs = {topic: (t, image(msg)) for topic, t, msg in messages if topic in (cfg.dark_topic, cfg.white_topic)}
    assert (refs[cfg.dark_topic][1] == dark).all() and (refs[cfg.white_topic][1] == white).all()
    assert refs[cfg.dark_topic][0] == raw[0][0]
    assert "transient_local" in qos[cfg.dark_topic] and "transient_local" not in qos[cfg.raw_topic]
    # the replay reads it as a camera driver's recording: references first, every frame processed
    assert main(["replay", str(out), str(tmp_path / "replayed"), "--no-copy-raw", "--no-progress",
                 "--backend", "ort-cpu"]) == 0
    assert "frames: 3 in, 3 processed" in capsys.readouterr().out


def test_a_frame_rate_spaces_the_stamps(files, tmp_path, capsys):
    root, *_ = files
    out = tmp_path / "bag"
    assert main(["bag-from-frames", str(root / "frames"), str(out), "--dark", str(root / "dark" / "d0.bin"),
                 "--white", str(root / "white.png"), "--fps", "10", "--start", "1700000000.5",
                 "--pattern", "*.bin", "--storage", "mcap"]) == 0
    capsys.readouterr()
    raw = [t for topic, t, _ in decoded(out)[0] if topic == NodeConfig().resolved().raw_topic]
    assert raw == [1700000000500000000]  # the .bin files only; the truncated one skipped
    assert json.loads((out / "hsi_xai_output.json").read_text())["tool"] == "hsi-xai bag-from-frames"


@pytest.mark.parametrize("change, message", [
    (["--stamps", "short"], "stamps {root}/short.txt: 2 stamps for 4 frame files"),
    (["--stamps", "backwards"], "line 2: 1699999999000000000 ns is out of range or not after the previous stamp"),
    (["--pattern", "*.npy", "--dark", "none"], "dark reference {root}/none: no such file or folder"),
    (["--pattern", "nf1111_004.bin"], "not one frame file could be read (first: {root}/frames/nf1111_004.bin: "
                                      "1000 bytes"),
    (["--fps", "0"], "fps must be a positive number, got 0.0"),
])
def test_refusals_write_nothing(files, tmp_path, capsys, change, message):
    root, *_ = files
    (root / "short.txt").write_text("1\n2\n")
    (root / "backwards.txt").write_text("1700000000.0\n1699999999.0\n1700000001.0\n1700000002.0\n")
    argv = ["bag-from-frames", str(root / "frames"), str(tmp_path / "bag"), "--dark", str(root / "dark"),
            "--white", str(root / "white.png")]
    for k in range(0, len(change), 2):
        value = change[k + 1]
        value = str(root / f"{value}.txt") if change[k] == "--stamps" else value
        value = str(root / value) if change[k] == "--dark" else value
        if change[k] in argv:
            argv[argv.index(change[k]) + 1] = value
        else:
            argv += [change[k], value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(root=root) in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bag, no partial directory
