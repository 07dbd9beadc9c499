"""The OpenVINO backend (``provider="openvino"``, the ``[openvino]`` extra): a bundle's own ``model.onnx`` on
the OpenVINO runtime, behind the part of ``onnxruntime.InferenceSession`` the :class:`~aidetect_infer.Detector`
uses.

OpenVINO's ONNX reader has no conversion for ONNX Runtime's ``QAttention`` and ``QEmbedLayerNormalization``;
this module registers one for each, in OpenVINO operators. It also reads ``DynamicQuantizeLinear`` and
``MatMulInteger`` as the products of the dequantized int8 weights: the graph OpenVINO compiles is the bundle's
int8 weights in floating point (what ``python -m export.recover`` turns into a checkpoint), with no activation
quantization. OpenVINO keeps the int8 weights compressed and computes in its own inference precision: bf16 on
CPUs with AMX or AVX512-BF16, f32 with per-token dynamic int8 of the activations elsewhere.

Every row of such a graph is computed alone only when no row of its batch is padding (a padded batch moved a
text's logits by up to 0.005, measured), so the Detector batches only windows of the same length on this
backend (:attr:`OpenVinoSession.equal_length_batches`), and windows under 32 tokens one per call
(:attr:`OpenVinoSession.batched_from_length`); the result is then the same bit for bit as one window per call.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aidetect_infer.errors import BundleError, InvalidValueError, ProviderUnavailableError

PROVIDER_NAME = "OpenVINOCPU"
INSTALL_HINT = "install aidetect-infer[openvino] (the openvino package)"
PRECISIONS = ("bf16", "f32")


def installed() -> bool:
    """Whether the ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True, slots=True)
class _Arg:
    """An input or output as ``onnxruntime.NodeArg`` describes it (the fields the runtime reads)."""

    name: str
    type: str
    shape: list[Any]


@dataclass(frozen=True, slots=True)
class _Options:
    intra_op_num_threads: int


def _converters() -> list[Any]:
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.frontend.onnx import ConversionExtension

    f32 = ov.Type.f32

    def const(value: Any, dtype: Any) -> Any:
        return ops.constant(np.asarray(value, dtype=dtype))

    def present(ctx: Any, index: int) -> bool:
        return bool(ctx.get_input_size() > index and not ctx.get_input(index).get_node().get_type_name() == "NullNode")

    def dequantized(ctx: Any, value: int, scale: int, zero_point: int) -> Any:
        x = ops.convert(ctx.get_input(value), f32)
        if present(ctx, zero_point):
            x = ops.subtract(x, ops.convert(ctx.get_input(zero_point), f32))
        return ops.multiply(x, ops.convert(ctx.get_input(scale), f32))

    def sequence_length(tensor: Any) -> Any:
        return ops.gather(ops.shape_of(tensor), const(1, np.int64), const(0, np.int64))

    def dynamic_quantize_linear(ctx: Any) -> list[Any]:
        # The input itself, scale 1 and zero point 0: the consumers below dequantize it back exactly.
        return [ctx.get_input(0), const(1.0, np.float32).output(0), const(0.0, np.float32).output(0)]

    def matmul_integer(ctx: Any) -> list[Any]:
        a, b = ops.convert(ctx.get_input(0), f32), ops.convert(ctx.get_input(1), f32)
        if present(ctx, 2):
            a = ops.subtract(a, ops.convert(ctx.get_input(2), f32))
        if present(ctx, 3):
            b = ops.subtract(b, ops.convert(ctx.get_input(3), f32))
        return [ops.matmul(a, b, False, False).output(0)]

    def embed_layer_norm(ctx: Any) -> list[Any]:
        # Inputs (ONNX Runtime's contrib schema): ids, segment ids, word, position, segment tables, gamma, beta,
        # mask, then their scales (8-12) and zero points (13-17). Positions are 0 .. sequence - 1.
        if present(ctx, 1) or present(ctx, 4):
            raise BundleError("QEmbedLayerNormalization with segment embeddings is not supported by OpenVINO here")
        ids = ctx.get_input(0)
        words = ops.gather(dequantized(ctx, 2, 8, 13), ids, const(0, np.int64))
        positions = ops.range(const(0, np.int64), sequence_length(ids), const(1, np.int64), ov.Type.i64)
        summed = ops.add(words, ops.gather(dequantized(ctx, 3, 9, 14), positions, const(0, np.int64)))
        eps = float(ctx.get_attribute("epsilon", 1e-12))
        normed = ops.mvn(summed, const([-1], np.int64), True, eps, "inside_sqrt")
        out = ops.add(ops.multiply(normed, dequantized(ctx, 5, 11, 16)), dequantized(ctx, 6, 12, 17))
        lengths = ops.convert(ops.reduce_sum(ctx.get_input(7), const([1], np.int64), False), ov.Type.i32)
        return [out.output(0), lengths.output(0)]

    def attention(ctx: Any) -> list[Any]:
        # Inputs: x, packed QKV weight [hidden, 3 hidden], bias, x scale, weight scale, mask index (valid
        # lengths, right padding), x zero point, weight zero point.
        if present(ctx, 8):
            raise BundleError("QAttention with a past state is not supported by OpenVINO here")
        heads = int(ctx.get_attribute("num_heads"))
        x = dequantized(ctx, 0, 3, 6)
        hidden = ctx.get_input(1).get_partial_shape()[0].get_length()
        size = hidden // heads
        qkv = ops.add(ops.matmul(x, dequantized(ctx, 1, 4, 7), False, False), ctx.get_input(2))
        split = const([0, 2, 1, 3], np.int64)
        q, k, v = (
            ops.transpose(ops.reshape(part, const([0, 0, heads, size], np.int64), True), split)
            for part in ops.split(qkv, const(-1, np.int64), 3).outputs()
        )
        keys = ops.range(const(0, np.int64), sequence_length(x), const(1, np.int64), ov.Type.i64)
        lengths = ops.convert(ctx.get_input(5), ov.Type.i64)
        valid = ops.less(ops.unsqueeze(keys, const(0, np.int64)), ops.unsqueeze(lengths, const(1, np.int64)))
        mask = ops.unsqueeze(valid, const([1, 2], np.int64))  # [batch, 1, 1, keys]: True attends
        scale = const(1.0 / np.sqrt(size), np.float32)
        context = ops.scaled_dot_product_attention(q, k, v, mask, scale, causal=False)
        merged = ops.reshape(ops.transpose(context, split), const([0, 0, hidden], np.int64), True)
        return [merged.output(0)]

    return [
        ConversionExtension("QEmbedLayerNormalization", "com.microsoft", embed_layer_norm),
        ConversionExtension("QAttention", "com.microsoft", attention),
        ConversionExtension("DynamicQuantizeLinear", dynamic_quantize_linear),
        ConversionExtension("MatMulInteger", matmul_integer),
    ]


def read_model(model_path: str | os.PathLike[str]) -> Any:
    """The bundle's graph as an ``openvino.Model`` (int8 products as products of their dequantized weights)."""
    import openvino as ov

    try:
        return ov.convert_model(str(model_path), extension=_converters())
    except BundleError:
        raise
    except Exception as exc:  # OpenVINO raises its own OpConversionFailure / GeneralFailure
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{model_path}: OpenVINO cannot read this graph ({first})") from exc


class OpenVinoSession:
    """A compiled OpenVINO model with the ``InferenceSession`` methods the runtime calls.

    ``run`` is thread-safe (one infer request per calling thread; OpenVINO runs them one after another on the
    one stream). One compilation, one stream: calls spread over threads on more streams or on one-thread
    compilations were measured and dropped (on OpenVINO 2026.4 a two-stream compilation of this graph returned
    wrong logits in 2 of 6 compilations, and two one-thread compilations called at once ran at half the speed
    of one two-thread compilation and moved some scores by up to 1.5e-4). :attr:`equal_length_batches` tells the
    Detector to batch only windows of one length, which keeps a text's score independent of its neighbours.

    Args:
        model_path: The bundle's ``model.onnx``.
        threads: Inference threads; ``None`` uses every core this process may use.
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT``: ``"bf16"``, ``"f32"`` (then also without OpenVINO's
            dynamic int8 of the activations: the dequantized graph in fp32, as ``export.recover`` sees it), or
            ``None`` to let OpenVINO choose (bf16 where the CPU has AMX or AVX512-BF16, else f32 with per-token
            dynamic int8 of the activations, per row and so batch-invariant too).

    Raises:
        ProviderUnavailableError: The ``openvino`` package is not installed, or it cannot compile for the CPU.
        BundleError: OpenVINO cannot read the graph.
    """

    equal_length_batches = True
    batched_from_length = 32
    """Shorter windows run one per call: OpenVINO computes a product of at most 4 rows (tokens of the whole
    call) another way, so a 4-token window alone and two of them together differed by up to 0.01 in their
    logits (measured on 2026.4, bf16); 32 leaves room for CPUs whose cut lies higher."""
    supports_io_binding = False

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        if not installed():
            raise ProviderUnavailableError(f"provider 'openvino' is not available: {INSTALL_HINT}")
        import openvino as ov

        from aidetect_infer.session import checked_threads

        self._threads = checked_threads(threads)
        self.model_path = Path(model_path)
        model = read_model(model_path)
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": self._threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if precision is not None:
            if precision not in PRECISIONS:
                raise InvalidValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
            config["INFERENCE_PRECISION_HINT"] = precision
            if precision == "f32":
                config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
        try:
            compiled = ov.Core().compile_model(model, "CPU", config)
        except Exception as exc:
            raise ProviderUnavailableError(f"OpenVINO could not compile {model_path} for the CPU: {exc}") from exc
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(hint.to_string() if hasattr(hint, "to_string") else hint)
        self._inputs = [port.get_any_name() for port in compiled.inputs]
        self._logits = compiled.output("logits")
        self._compiled = compiled
        self._local = threading.local()

    def get_inputs(self) -> list[_Arg]:
        return [_Arg(name, "tensor(int64)", ["batch", "sequence"]) for name in self._inputs]

    def get_outputs(self) -> list[_Arg]:
        return [_Arg("logits", "tensor(float)", ["batch", 2])]

    def get_providers(self) -> list[str]:
        return [PROVIDER_NAME]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {PROVIDER_NAME: {"precision": self.precision, "threads": str(self._threads)}}

    def get_session_options(self) -> _Options:
        return _Options(intra_op_num_threads=self._threads)

    def run(self, output_names: Sequence[str] | None, feed: dict[str, NDArray[np.int64]]) -> list[NDArray[Any]]:
        """``[logits]`` for ``feed`` (``output_names`` may only ask for ``logits``)."""
        if output_names is not None and list(output_names) != ["logits"]:
            raise BundleError(f"the OpenVINO backend returns only 'logits', not {list(output_names)}")
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({name: feed[name] for name in self._inputs})
        return [np.array(result[self._logits], dtype=np.float32)]
