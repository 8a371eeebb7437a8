"""What a fleet run reads and how it cuts bags into shards (no Ray needed)."""

import pytest

from hsi_xai_node.errors import InputError
from hsi_xai_node.fleet import find_bags, plan_shards
from hsi_xai_node.transports.config import load_config
from hsi_xai_node.transports.drive_bag import write_drive_bag

FRAME_NS = 40_000_000


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/{x, car1/{y, z.mcap}, .hidden/w, out/v, notabag/readme.txt}: x and y are rosbag2 directories."""
    root = tmp_path_factory.mktemp("tree")
    config = load_config()
    write_drive_bag(root / "x", config, frames=5, cameras=False)
    (root / "car1").mkdir()
    write_drive_bag(root / "car1" / "y", config, frames=2, cameras=False, storage="sqlite3")
    (root / "car1" / "z.mcap").write_bytes(b"a loose mcap file (its replay says if it is readable)")
    for hidden in (".hidden", "out"):
        (root / hidden).mkdir()
        write_drive_bag(root / hidden / "w", config, frames=1, cameras=False)
    (root / "notabag").mkdir()
    (root / "notabag" / "readme.txt").write_text("nothing here")
    return root


def test_directory_is_searched_recursively(tree):
    bags = find_bags(tree, exclude=tree / "out")
    assert [(b.name, b.path) for b in bags] == [("car1/y", str(tree / "car1" / "y")),
                                                ("car1/z", str(tree / "car1" / "z.mcap")),
                                                ("x", str(tree / "x"))]


def test_manifest_paths_comments_and_names(tree, tmp_path):
    manifest = tree / "list.txt"
    manifest.write_text(f"# the drives of car 1\nx\n\n  car1/y   # sqlite3\n{tree / 'out' / 'w'}\n")
    bags = find_bags(manifest)
    assert [b.path for b in bags] == [str(tree / "x"), str(tree / "car1" / "y"), str(tree / "out" / "w")]
    assert [b.name for b in bags] == ["x", "car1/y", "out/w"]  # relative to the bags' common parent
    twice = tmp_path / "twice.txt"
    twice.write_text(f"{tree / 'x'}\n{tree / 'x'}\n")
    with pytest.raises(InputError, match="listed twice"):
        find_bags(twice)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no bags"):
        find_bags(empty)


def test_no_bags_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no rosbag2 bags"):
        find_bags(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        find_bags(tmp_path / "missing")


def test_windows_cover_each_bag_once(tree):
    (x,) = [b for b in find_bags(tree, exclude=tree / "out") if b.name == "x"]
    shards = plan_shards([x], 0.05, "/hsi/image_raw", "run")
    # 5 frames 40 ms apart (references 1 ns before the first): [t0 - 1, t0 + 160 ms] in 50 ms windows
    assert len(shards) == 4 and [s.index for s in shards] == [0, 1, 2, 3]
    assert all(a.end_ns == b.start_ns for a, b in zip(shards, shards[1:]))
    t0 = shards[0].start_ns + 1
    assert shards[-1].end_ns == t0 + 4 * FRAME_NS + 1  # the last message included
    assert all(s.end_ns - s.start_ns == 50_000_000 for s in shards[:-1])
    assert sum(s.frames for s in shards) == pytest.approx(5, abs=1)
    assert len({s.key for s in shards}) == 4
    (whole,) = plan_shards([x], 0, "/hsi/image_raw", "run")
    assert whole.start_ns is None and whole.frames == 5
    (again,) = plan_shards([x], 0, "/hsi/image_raw", "run")
    assert again.key == whole.key and plan_shards([x], 0, "/hsi/image_raw", "other")[0].key != whole.key


def test_unreadable_bag_is_one_shard(tree):
    (z,) = [b for b in find_bags(tree, exclude=tree / "out") if b.name == "car1/z"]
    (shard,) = plan_shards([z], 0.05, "/hsi/image_raw", "run")
    assert shard.start_ns is None and shard.frames == 0
