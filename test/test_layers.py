"""The package's layering, read from its source: no module imports one of a higher layer, and no import circle.

Every import counts, also those inside functions (a lazy import is still a dependency). The layer
order is written down once, here, lowest first; a module's layer is that of its top-level
package (or module) under hsi_xai_node.
"""

import ast
from pathlib import Path

from test.conftest import REPO

LAYERS = [
    # foundation: no package above it is imported
    {"errors", "resources", "classes", "_lazy", "metrics", "drive_splits", "report_page", "sync", "schema", "files",
     "demo_facts"},
    # the sensor front end (calibration, demosaicing, radiometry, the camera rig) and the explain compiler
    {"sensor", "explain"},
    # model and detector cards, detection heads and postprocessing
    {"model_card", "detection"},
    # engines and the pipelines a vehicle runs
    {"runtime"},
    # generated drives and the rosbag2 transport
    {"scenes", "transports", "datasets"},
    # tools built on all of that: reliability, training, overlay calibration, the demo, the fleet on Ray
    {"reliability", "training", "overlay_calibration", "demo", "fleet", "model_import", "evaluate"},
    # the entry points: the ROS node, the command line, the package's lazy front door
    {"ros", "cli", "__init__"},
]
PACKAGE = REPO / "hsi_xai_node"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """hsi_xai_node modules this file imports (absolute names), anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" for a in node.names]
            else:
                target, names = node.module or "", [f"{node.module}.{a.name}" for a in node.names]
            # `from . import messages` imports a module; `from .x import y` the module x
            out.update(n for n in names if _is_module(n)) if not node.module else out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "hsi_xai_node"}


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    found = [i for i, group in enumerate(LAYERS) if top in group]
    assert found, f"{module}: its package {top!r} has no layer in test_layers.LAYERS: add it there"
    return found[0]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    g = graph()
    modules = set(g)

    def resolve(name: str) -> str:  # `hsi_xai_node.runtime.engine.Engine` style names: the module part
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {a: {resolve(b) for b in targets} - {a} for a, targets in g.items()}
    # a package's __init__ re-exporting its own modules is not a circle through them
    edges = {a: {b for b in bs if not b.startswith(a + ".") or not (PACKAGE.parent / a.replace(".", "/")).is_dir()}
             for a, bs in edges.items()}
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                circles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_the_rig_is_data_shared_by_the_front_end_and_the_generator():
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile
    from hsi_xai_node.sensor.rig import DEFAULT_RIG, read_rig

    rig = read_rig()
    assert DEFAULT_RIG.name == "rig_default.yaml" and DEFAULT_RIG.parent.name == "config"
    gen = DriveGenerator(load_profile("hsi-drive"), seed=0)
    assert [c.name for c in gen.cameras] == list(rig.cameras)
    for cam in gen.cameras:
        spec = rig.cameras[cam.name]
        assert (cam.width, cam.height, cam.encoding) == (spec.width, spec.height, spec.encoding)
        assert (cam.homography == spec.homography).all()
