"""hsi_xai_node: explainable perception for snapshot-mosaic hyperspectral cameras."""
