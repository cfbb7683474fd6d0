"""Shipped ONNX models, each with a JSON metadata file beside it (same stem); see tools/train_model.py."""
