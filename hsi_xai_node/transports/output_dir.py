"""Where the tools write, and what they may replace: only what they wrote themselves.

Every directory a tool of this package writes (an output bag, the demo's folder) carries a
marker file, `hsi_xai_output.json`, naming the tool and what it wrote. `--overwrite` (and the
demo re-running into its folder) replaces an existing path only when it is

    - an empty directory, or a directory with that marker, or
    - a rosbag2 directory: a `metadata.yaml` of rosbag2 and nothing but bag files beside it
      (`*.mcap`, `*.db3` and sqlite's `-wal`/`-shm` companions),

and refuses anything else (a regular file, a symlink, a directory holding other files) with
one line naming the path and what is in it, so a mistyped OUT never deletes a user's data.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path


from ..errors import InputError
from ..files import read_json, read_yaml

MARKER = "hsi_xai_output.json"
PARTIAL_MARKER = "hsi_xai_partial.json"  # inside a temporary `.<name>.<random>.partial` directory: whose it is
_BAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-wal", ".db3-shm", ".db3-journal")


def write_marker(directory: Path, tool: str, **info) -> None:
    """Mark `directory` as written by `tool` (with `info`, e.g. the configuration it was made with)."""
    (Path(directory) / MARKER).write_text(json.dumps({"tool": tool, **info}, indent=1, default=str))


def read_marker(directory: Path) -> dict | None:
    """The marker's content, or None when the directory has no readable marker."""
    try:
        doc = read_json(Path(directory) / MARKER, "output marker", InputError)
    except InputError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_rosbag2_dir(path: Path) -> bool:
    try:
        doc = read_yaml(path / "metadata.yaml", "bag metadata", InputError)
    except InputError:
        return False
    if not isinstance(doc, dict) or "rosbag2_bagfile_information" not in doc:
        return False
    return all(p.is_file() and (p.name in ("metadata.yaml", MARKER) or p.name.endswith(_BAG_FILE_SUFFIXES))
               for p in path.iterdir())


def _contents(path: Path, shown: int = 4) -> str:
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    more = f", ... ({len(names)} entries)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "empty"


def check_replaceable(path: str | Path, overwrite: bool, what: str = "output") -> None:
    """Raise InputError unless `path` is absent, or `overwrite` is set and the path is ours to replace."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise InputError(f"{what} {path} exists: choose another path, or replace it with --overwrite (the "
                         "overwrite option of the Python API)")
    if path.is_symlink():
        raise InputError(f"{what} {path} is a symbolic link: not replacing it; remove it yourself or choose "
                         "another path")
    if not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a bag directory this tool wrote: not replacing it; remove "
                         "it yourself or choose another path")
    if any(path.iterdir()) and read_marker(path) is None and not _is_rosbag2_dir(path):
        raise InputError(f"{what} {path} is not a rosbag2 directory or an output of this tool (it holds "
                         f"{_contents(path)}): not replacing it; remove it yourself or choose another path")


def remove_replaceable(path: str | Path, what: str = "output") -> None:
    """Delete `path` after `check_replaceable(path, overwrite=True)` allows it (a missing path is fine)."""
    path = Path(path)
    check_replaceable(path, True, what)
    if path.is_dir():
        shutil.rmtree(path)


def prepare_dir(path: str | Path, tool: str, what: str = "output directory") -> Path:
    """Create (or reuse) a directory `tool` writes files into: absent, empty, or marked by the same tool.

    A directory holding anything else is refused, so files of the user's are never overwritten."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{what} {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        marker = read_marker(path)
        if marker is None or marker.get("tool") != tool:
            raise InputError(f"{what} {path} already holds files that {tool} did not write ({_contents(path)}): "
                             "choose an empty or new directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be created ({exc.strerror or exc})") from None
    write_marker(path, tool)
    return path


def writable_parent(path: str | Path, what: str = "output") -> Path:
    """Create the parent of `path`; one clear error when it cannot be (a file in the way, no permission)."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as exc:  # FileExistsError, NotADirectoryError, PermissionError, symlink loops
        raise InputError(f"{what} {path}: its directory {parent} cannot be created "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: its directory {parent} is not writable")
    return parent


# --- temporary outputs: complete or absent, and never left to pile up -------------------------------------------
def make_partial(out: str | Path, tool: str) -> Path:
    """A temporary sibling directory `.<name>.<random>.partial` of `out` to build it in (renamed into place when
    complete), marked with the tool, host and process that write it, so a later run can tell a killed run's
    leftover (its process gone) from another run's work in progress."""
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=writable_parent(out)))
    (tmp / PARTIAL_MARKER).write_text(json.dumps({"tool": tool, "host": socket.gethostname(), "pid": os.getpid(),
                                                  "started": time.time()}))
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a pid this system cannot hold): not ours to judge
    return True


def disk_bytes(path: str | Path) -> int:
    """Bytes of a file, or of every file under a directory (0 for what cannot be read)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def clean_stale_partials(out: str | Path) -> list[str]:
    """Remove the temporary directories of `out` that a killed run of this package left (`kill -9`, a power cut):
    only those carrying our marker whose process is gone on this host. Returns one line per directory found,
    removed or left (another host's, or a run still going), for the caller to report."""
    out = Path(out)
    found = []
    try:
        candidates = sorted(out.parent.glob(f".{out.name}.*.partial"))
    except OSError:
        return found
    for tmp in candidates:
        try:
            info = read_json(tmp / PARTIAL_MARKER, "output marker", InputError)
        except InputError:
            continue  # not ours (or unreadable): never touched
        if not isinstance(info, dict):
            continue
        mb = disk_bytes(tmp) / (1 << 20)
        pid, host = info.get("pid"), info.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            found.append(f"removed {tmp} ({mb:,.1f} MB), left by a {info.get('tool', 'run')} that stopped before it "
                         "finished")
        else:
            found.append(f"left {tmp} ({mb:,.1f} MB): being written by process {pid} on {host}")
    return found


def check_space(out: str | Path, need_bytes: int, what: str = "output") -> None:
    """Before any model loads: the output's directory can be created and written, and holds `need_bytes` free."""
    parent = writable_parent(out, what)
    free = shutil.disk_usage(parent).free
    if free < need_bytes:
        raise InputError(f"{what} {out}: {free / (1 << 20):,.0f} MB free in {parent}, about "
                         f"{need_bytes / (1 << 20):,.0f} MB needed (about the input's size): refused before starting")


def write_error(out: str | Path, exc: OSError) -> InputError:
    """An OSError met while writing `out` (a full disk, a quota, a vanished directory), as one line naming it."""
    why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return InputError(f"output {out}: writing failed: {why}{where}; nothing was kept")
