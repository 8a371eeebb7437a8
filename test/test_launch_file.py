"""launch/hsi_xai.launch.py, read with ast: it imports launch/launch_ros, which only a ROS machine has."""

import ast
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "hsi_xai.launch.py"
ARGUMENTS = {"model", "detector_model", "config", "namespace", "use_sim_time", "backend", "raw_topic", "log_level"}


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


@pytest.fixture(scope="module")
def tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_declared_arguments_have_default_and_description(tree):
    declared = {}
    for call in calls(tree, "DeclareLaunchArgument"):
        keywords = {k.arg: k.value for k in call.keywords}
        name = call.args[0].value if call.args else keywords["name"].value
        declared[name] = keywords
    assert set(declared) == ARGUMENTS
    for name, keywords in declared.items():
        assert "default_value" in keywords, name
        description = keywords.get("description")
        assert isinstance(description, ast.Constant) and description.value.strip(), name
    assert declared["use_sim_time"]["default_value"].value == "false"
    assert declared["raw_topic"]["default_value"].value == "/hsi/image_raw"


def test_every_launch_configuration_is_declared(tree):
    # a typo here would silently become an undeclared (and unset) substitution at launch time
    used = {c.args[0].value for c in calls(tree, "LaunchConfiguration")}
    assert used == ARGUMENTS


def test_starts_the_node(tree):
    (node,) = calls(tree, "Node")
    keywords = {k.arg: k.value for k in node.keywords}
    assert keywords["package"].value == "hsi_xai_node"
    assert keywords["executable"].value == "hsi_xai_node"
    assert keywords["name"].value == "hsi_xai"
    overrides = next(e for e in keywords["parameters"].elts if isinstance(e, ast.Dict))
    assert {k.value for k in overrides.keys} == {"model", "detector_model", "backend", "use_sim_time", "raw_topic"}
    assert [a.value for a in keywords["arguments"].elts[:2]] == ["--ros-args", "--log-level"]
