"""Offline tools: model training and other jobs that run beside the pipeline, never on its hot path."""
