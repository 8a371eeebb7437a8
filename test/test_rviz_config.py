"""config/hsi_xai.rviz: the node's image outputs (four segmentation, one detection) as reliable Image displays."""

from pathlib import Path

import yaml

RVIZ = Path(__file__).resolve().parents[1] / "config" / "hsi_xai.rviz"
TOPICS = {"/hsi_xai/preview", "/hsi_xai/segmentation", "/hsi_xai/gradcam_overlay", "/hsi_xai/activation_overlay",
          "/hsi_xai/detection/overlay"}


def test_image_displays_and_fixed_frame():
    manager = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "hsi_camera"
    images = {d["Topic"]["Value"]: d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"}
    assert set(images) == TOPICS
    for topic, display in images.items():
        assert display["Enabled"] is True, topic
        # reliable, to match the node's default output_qos (a best-effort reader would still work)
        assert display["Topic"]["Reliability Policy"] == "Reliable", topic
        assert display["Topic"]["Depth"] == 5, topic


def test_the_displays_name_topics_the_node_publishes():
    """Each Image display's topic is one the node publishes with the shipped parameters at the root namespace:
    the shipped output_namespace resolved, and a name of the node's image outputs (transports.outputs, what
    ros/core publishes). Under a namespace, RViz's topics are re-chosen in its panel (README)."""
    from hsi_xai_node.transports.outputs import DETECTION_IMAGE_OUTPUTS, IMAGE_OUTPUTS

    from hsi_xai_node.transports.config import load_config

    # the node hsi_xai at the root (the launch file's default namespace): output_namespace "~" is /hsi_xai
    config = load_config(RVIZ.parent / "hsi_xai.yaml")
    published = {config.output_topic(n) for n in (*IMAGE_OUTPUTS, *DETECTION_IMAGE_OUTPUTS)}
    manager = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    shown = {d["Topic"]["Value"] for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"}
    assert shown and shown <= published, sorted(shown - published)
    assert shown == TOPICS


def test_every_image_display_has_a_panel_entry():
    doc = yaml.safe_load(RVIZ.read_text())
    names = {d["Name"] for d in doc["Visualization Manager"]["Displays"] if d["Class"] == "rviz_default_plugins/Image"}
    assert names <= set(doc["Window Geometry"]) and "Detection overlay" in names
