"""launch/hsi_xai.launch.py, read with ast: it imports launch/launch_ros, which only a ROS machine has."""

import ast
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "hsi_xai.launch.py"
ARGUMENTS = {"model", "detector_model", "config", "namespace", "use_sim_time", "backend", "raw_topic", "log_level",
             "managed", "autostart"}


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
    assert declared["raw_topic"]["default_value"].value == "hsi/image_raw"  # relative: namespace:= moves it


def test_every_launch_configuration_is_declared(tree):
    # a typo here would silently become an undeclared (and unset) substitution at launch time
    used = {c.args[0].value for c in calls(tree, "LaunchConfiguration")}
    assert used == ARGUMENTS


def _keywords(call) -> dict:
    return {k.arg: k.value for k in call.keywords if k.arg}


def test_starts_the_plain_or_the_lifecycle_node(tree):
    """Both nodes get the same settings (`common`); `managed` chooses which one runs."""
    (assign,) = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "common"]
    common = _keywords(assign.value)
    assert common["package"].value == "hsi_xai_node" and common["name"].value == "hsi_xai"
    overrides = next(e for e in common["parameters"].elts if isinstance(e, ast.Dict))
    assert {k.value for k in overrides.keys} == {"model", "detector_model", "backend", "use_sim_time", "raw_topic"}
    assert [a.value for a in common["arguments"].elts[:2]] == ["--ros-args", "--log-level"]
    (plain,), (managed,) = calls(tree, "Node"), calls(tree, "LifecycleNode")
    for call, executable, condition in ((plain, "hsi_xai_node", "UnlessCondition"),
                                        (managed, "hsi_xai_lifecycle_node", "IfCondition")):
        keywords = _keywords(call)
        assert keywords["executable"].value == executable
        assert keywords["condition"].func.id == condition and keywords["condition"].args[0].id == "managed"
        assert [k.value.id for k in call.keywords if k.arg is None] == ["common"]


def test_autostart_configures_then_activates_the_lifecycle_node(tree):
    transitions = [ast.unparse(_keywords(c)["transition_id"]) for c in calls(tree, "ChangeState")]
    assert sorted(transitions) == ["Transition.TRANSITION_ACTIVATE", "Transition.TRANSITION_CONFIGURE"]
    (handler,) = calls(tree, "OnStateTransition")
    assert _keywords(handler)["goal_state"].value == "inactive"  # activate once configured
    assert "TRANSITION_ACTIVATE" in ast.unparse(_keywords(handler)["entities"])
    # both guarded by managed AND autostart
    guarded = [c for c in calls(tree, "EmitEvent") + calls(tree, "RegisterEventHandler") if "condition" in _keywords(c)]
    assert len(guarded) == 2 and all(_keywords(c)["condition"].id == "autostart" for c in guarded)
    (guard,) = calls(tree, "AndSubstitution")
    assert [ast.unparse(a) for a in guard.args] == ["managed", "LaunchConfiguration('autostart')"]
