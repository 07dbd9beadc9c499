"""Evaluation: the named evaluation sets, metrics, and scoring a checkpoint or a bundle
(``python -m export.evaluate``, ``export.onnx_eval``)."""
