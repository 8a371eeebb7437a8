"""Training and ONNX export (imports torch; the runtime never imports this package)."""
