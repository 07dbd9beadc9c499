"""ONNX: export with parity, fusion, the LayerNorm rewrite, quantization, the accuracy gate and the one build
function that turns a checkpoint and a recipe into bundles (``python -m export.onnx``, ``export.to_onnx``)."""
