"""Offline training: datasets of labelled feature vectors, walk-forward folds, member trainers (logistic, gradient-
boosted trees), calibration, the ensemble's weights and threshold, and the model registry in ``models/``.

Training only: the inference stage reads the registry's files with onnxruntime and never imports this package."""
