"""``provider="openvino"``: the bundle's graph on the OpenVINO runtime.

Without the ``openvino`` package the provider raises a clear error; with it, the scores equal the bundle's
dequantized graph on ONNX Runtime (fp32, computed another way), a text alone equals the same text in any
batch, and threads calling at once equal one batched call.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Detector, openvino_backend
from aidetect_infer.bundle import load_bundle
from aidetect_infer.detector import DEFAULT_MODEL_DIR
from aidetect_infer.errors import BundleError, InvalidValueError, ProviderUnavailableError
from aidetect_infer.loading import load_parts
from aidetect_infer.session import resolve_providers
from aidetect_infer.tokenization import load_tokenizer
from export.recover import dequantized_detector
from tests.runtime.test_batch_invariance import POOL

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
needs_openvino = pytest.mark.skipif(not openvino_backend.installed(), reason="the [openvino] extra is not installed")
shipped_only = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "aidetect.json").is_file(), reason=f"no shipped default model at {DEFAULT_MODEL_DIR}"
)


def test_openvino_is_not_an_onnx_runtime_provider() -> None:
    with pytest.raises(InvalidValueError, match="from_pretrained"):
        resolve_providers("openvino", ort.get_available_providers())


def test_auto_keeps_onnx_runtime_where_openvino_is_installed(tiny_bundle) -> None:
    """``auto`` never picks the OpenVINO backend: it is slower on short texts of many lengths (measured)."""
    detector = Detector.from_pretrained(tiny_bundle, provider="auto", threads=1)
    assert openvino_backend.PROVIDER_NAME not in detector.providers
    assert isinstance(detector._session, ort.InferenceSession)  # noqa: SLF001


def test_the_cli_offers_every_provider() -> None:
    import argparse

    from aidetect_infer.cli.common import add_model_arguments
    from aidetect_infer.session import PROVIDERS

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "provider"]  # noqa: SLF001
    assert tuple(action.choices) == PROVIDERS


def test_missing_openvino_package_is_a_clear_error(tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openvino_backend, "installed", lambda: False)
    with pytest.raises(ProviderUnavailableError, match=r"aidetect-infer\[openvino\]"):
        Detector.from_pretrained(tiny_bundle, provider="openvino")


def _with_openvino(path, precision: str | None = None, threads: int = 2, batch_size: int = 16) -> Detector:
    bundle = load_bundle(path)
    session = openvino_backend.OpenVinoSession(bundle.model_path, threads=threads, precision=precision)
    return Detector(
        session=session,  # type: ignore[arg-type]
        tokenizer=load_tokenizer(bundle.tokenizer_path),
        metadata=bundle.metadata,
        batch_size=batch_size,
    )


@needs_openvino
def test_tiny_fp32_bundle_equals_onnx_runtime(tiny_bundle) -> None:
    texts = POOL[:40]
    expected = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=2).predict_proba(texts)
    got = _with_openvino(tiny_bundle, precision="f32").predict_proba(texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@needs_openvino
def test_session_reports_itself(tiny_bundle) -> None:
    detector = Detector.from_pretrained(tiny_bundle, provider="openvino", threads=1)
    session = detector._session  # noqa: SLF001 (the backend's own contract)
    assert session.get_providers() == [openvino_backend.PROVIDER_NAME]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_provider_options()[openvino_backend.PROVIDER_NAME]["precision"] in openvino_backend.PRECISIONS
    assert 0.0 <= detector.predict_proba("A short text to score.") <= 1.0


@needs_openvino
def test_bad_arguments_and_graphs_are_refused(tiny_bundle, tmp_path) -> None:
    model = load_bundle(tiny_bundle).model_path
    with pytest.raises(InvalidValueError, match="precision"):
        openvino_backend.OpenVinoSession(model, precision="int4")
    with pytest.raises(InvalidValueError, match="threads"):
        openvino_backend.OpenVinoSession(model, threads=0)
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(BundleError, match="OpenVINO cannot read"):
        openvino_backend.OpenVinoSession(garbage)
    session = openvino_backend.OpenVinoSession(model, threads=1)
    with pytest.raises(BundleError, match="only 'logits'"):
        session.run(["hidden_states"], {})
    with pytest.raises(InvalidValueError, match="io_binding"):
        Detector.from_pretrained(tiny_bundle, provider="openvino", io_binding=True).predict_proba("text")


@pytest.fixture(scope="module")
def reference() -> Detector:
    """The shipped bundle's int8 weights dequantized, fp32 on ONNX Runtime (computed another way)."""
    return dequantized_detector(DEFAULT_MODEL_DIR, threads=2)


@pytest.fixture(scope="module")
def shipped_f32() -> Detector:
    return _with_openvino(DEFAULT_MODEL_DIR, precision="f32")


@pytest.fixture(scope="module")
def shipped_parts() -> tuple:
    """Session, tokenizer, metadata and the one-thread session as ``from_pretrained(provider="openvino")`` opens
    them: OpenVINO's own precision (bf16 on CPUs with AMX)."""
    return load_parts(DEFAULT_MODEL_DIR, provider="openvino", threads=2, variant=None)


@pytest.fixture(scope="module")
def shipped_default(shipped_parts: tuple) -> Detector:
    session, tokenizer, metadata, parallel = shipped_parts
    return Detector(session=session, tokenizer=tokenizer, metadata=metadata, parallel_session=parallel)


@shipped_only
@needs_openvino
def test_shipped_int8_graph_equals_its_dequantized_weights_in_fp32(shipped_f32: Detector, reference: Detector) -> None:
    texts = POOL[::3]
    expected = reference.predict_proba(texts)
    np.testing.assert_allclose(shipped_f32.predict_proba(texts), expected, atol=1e-4)


@shipped_only
@needs_openvino
def test_shipped_default_precision_stays_within_the_int8_gate(shipped_default: Detector, reference: Detector) -> None:
    texts = POOL[::2]
    expected = reference.predict_proba(texts)
    got = shipped_default.predict_proba(texts)
    threshold = shipped_default.threshold
    assert np.max(np.abs(got - expected)) < 0.05
    assert np.mean((got >= threshold) == (expected >= threshold)) >= 0.99


@pytest.fixture(scope="module")
def alone(shipped_default: Detector) -> dict[int, float]:
    return {k: float(shipped_default.predict_proba([text])[0]) for k, text in enumerate(POOL)}


@needs_openvino
@shipped_only
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 64), batch_size=st.sampled_from([1, 3, 16, 64]))
def test_a_text_alone_equals_the_text_in_any_batch(
    shipped_parts: tuple, alone: dict[int, float], seed: int, size: int, batch_size: int
) -> None:
    picks = random.Random(seed).choices(range(len(POOL)), k=size)
    session, tokenizer, metadata, parallel = shipped_parts
    batched = Detector(
        session=session, tokenizer=tokenizer, metadata=metadata, batch_size=batch_size, parallel_session=parallel
    )
    got = batched.predict_proba([POOL[k] for k in picks])
    np.testing.assert_allclose(got, [alone[k] for k in picks], atol=1e-5, rtol=0)


@needs_openvino
@shipped_only
@pytest.mark.parametrize("batch_size", [2, 16, 64])
def test_the_whole_pool_batched_equals_each_text_alone(
    shipped_parts: tuple, alone: dict[int, float], batch_size: int
) -> None:
    """Every text at once (windows of 1 to 256 tokens, several windows of one length, texts of 2 to 4 tokens
    whose products OpenVINO computes another way when they are alone)."""
    session, tokenizer, metadata, _ = shipped_parts
    batched = Detector(session=session, tokenizer=tokenizer, metadata=metadata, batch_size=batch_size)
    np.testing.assert_allclose(batched.predict_proba(POOL), [alone[k] for k in range(len(POOL))], atol=1e-5, rtol=0)


@shipped_only
@needs_openvino
def test_threads_calling_at_once_equal_one_batched_call(shipped_default: Detector, alone: dict[int, float]) -> None:
    texts = POOL[:48]
    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(lambda t: float(shipped_default.predict_proba([t])[0]), texts))
    np.testing.assert_allclose(singles, shipped_default.predict_proba(texts), atol=1e-5, rtol=0)
    np.testing.assert_allclose(singles, [alone[k] for k in range(48)], atol=1e-5, rtol=0)


@needs_openvino
@shipped_only
def test_padded_batches_would_move_the_scores(shipped_parts: tuple, alone: dict[int, float]) -> None:
    """The property above is not vacuous: batching windows of different lengths together moves a score."""
    session, tokenizer, metadata, _ = shipped_parts
    padded = Detector(session=session, tokenizer=tokenizer, metadata=metadata, batch_size=16, batch_invariant=False)
    got = padded.predict_proba(POOL)
    assert np.max(np.abs(got - np.asarray([alone[k] for k in range(len(POOL))]))) > 1e-5
