"""Detection stages that need no torch: anchors, box coding, in-graph post-processing, evaluation."""
