"""The Detector API: construction, input validation, defined answers, default bundle, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from aidetect_infer import Detector, Prediction
from aidetect_infer import detector as detector_module
from aidetect_infer import loading as loading_module
from aidetect_infer.bundle import load_bundle
from aidetect_infer.errors import (
    AidetectError,
    InvalidInputError,
    InvalidValueError,
    ModelFilesMissingError,
    ProviderUnavailableError,
)


def test_prediction_is_frozen_with_slots():
    prediction = Prediction(label="ai", score=0.9, threshold=0.5, windows=1)
    with pytest.raises(AttributeError):
        prediction.score = 0.1
    assert not hasattr(prediction, "__dict__")


@pytest.mark.parametrize(
    ("bad", "index", "type_name"),
    [([b"bytes"], 0, "bytes"), (["ok", None], 1, "NoneType"), (["a", "b", 3.5], 2, "float")],
)
def test_non_string_items_name_index_and_type(detector, bad, index, type_name):
    for call in (detector.predict, detector.predict_proba):
        with pytest.raises(InvalidInputError, match=rf"texts\[{index}\] is {type_name}"):
            call(bad)


@pytest.mark.parametrize("bad", [None, 42, b"raw bytes", {"text": "a dict"}])
def test_non_text_arguments_are_refused(detector, bad):
    with pytest.raises(InvalidInputError):
        detector.predict(bad)
    with pytest.raises(TypeError):  # InvalidInputError is also a TypeError
        detector.predict_proba(bad)


def test_single_string_and_sequences(detector):
    single = detector.predict("One text.")
    assert isinstance(single, Prediction) and isinstance(single.score, float)
    as_tuple = detector.predict(("One text.", "Two texts."))
    assert isinstance(as_tuple, list) and len(as_tuple) == 2
    assert as_tuple[0] == single
    generated = detector.predict_proba(t for t in ["One text.", "Two texts."])
    assert generated.shape == (2,)
    assert detector.predict_proba(np.array(["One text."]))[0] == pytest.approx(single.score, abs=1e-6)


def test_injected_parts_give_the_same_scores(detector, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    injected = Detector(
        session=session, tokenizer=Tokenizer.from_file(str(bundle.tokenizer_path)), metadata=bundle.metadata
    )
    texts = ["first text", "a second, somewhat longer text with more words in it"]
    np.testing.assert_allclose(injected.predict_proba(texts), detector.predict_proba(texts), atol=1e-6)


def test_injection_needs_all_three_parts(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(InvalidInputError, match="together"):
        Detector(metadata=bundle.metadata)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    with pytest.raises(InvalidInputError, match="tokenizers.Tokenizer"):
        Detector(session=session, tokenizer="tokenizer.json", metadata=bundle.metadata)
    with pytest.raises(InvalidInputError, match="BundleMetadata"):
        Detector(session=session, tokenizer=Tokenizer.from_file(str(bundle.tokenizer_path)), metadata={})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"batch_size": 0}, InvalidValueError),
        ({"batch_size": 2.5}, InvalidValueError),
        ({"threads": 0}, InvalidValueError),
        ({"threads": "2"}, InvalidValueError),
        ({"max_length": 4}, InvalidValueError),
        ({"max_length": 1024}, InvalidValueError),
        ({"max_length": "64"}, InvalidInputError),
        ({"provider": "gpu"}, InvalidValueError),
        ({"provider": "cuda"}, ProviderUnavailableError),
        ({"provider": "tensorrt"}, ProviderUnavailableError),
    ],
)
def test_bad_options_are_refused(tiny_bundle, kwargs, error):
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(kwargs.get("provider"))
    if wanted in ort.get_available_providers():
        pytest.skip(f"this machine has {wanted}")
    with pytest.raises(error):
        Detector.from_pretrained(tiny_bundle, **{"provider": "cpu", **kwargs})


def test_explicit_cuda_raises_naming_what_is_missing(tiny_bundle):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProviderUnavailableError, match=r"CUDAExecutionProvider not available: install .*\[gpu\]"):
        Detector.from_pretrained(tiny_bundle, provider="cuda")


def test_auto_reports_what_it_got(tiny_bundle, caplog):
    with caplog.at_level("INFO", logger="aidetect_infer.session"):
        detector = Detector.from_pretrained(tiny_bundle, provider="auto", threads=1)
    assert detector.providers[-1] == "CPUExecutionProvider"
    assert set(detector.providers) <= set(ort.get_available_providers())
    assert any("providers" in record.getMessage() for record in caplog.records)


def test_default_bundle_from_environment(tiny_bundle, monkeypatch, detector):
    monkeypatch.setenv("AIDETECT_MODEL", str(tiny_bundle))
    default = Detector()
    assert default.metadata == load_bundle(tiny_bundle).metadata
    text = "A sentence for the default detector."
    assert default.predict(text).score == pytest.approx(detector.predict(text).score, abs=1e-6)
    assert Detector.from_pretrained(None, provider="cpu").metadata.name == default.metadata.name


def test_missing_default_bundle_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("AIDETECT_MODEL", raising=False)
    monkeypatch.setattr(loading_module, "DEFAULT_MODEL_DIR", tmp_path / "models" / "default")
    with pytest.raises(ModelFilesMissingError, match="AIDETECT_MODEL") as info:
        Detector()
    assert str(tmp_path / "models" / "default") in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AidetectError)
    monkeypatch.setenv("AIDETECT_MODEL", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelFilesMissingError, match=r"\$AIDETECT_MODEL"):
        Detector.from_pretrained()


def test_default_path_is_the_repository_models_default(monkeypatch):
    monkeypatch.delenv("AIDETECT_MODEL", raising=False)
    expected = Path(detector_module.__file__).resolve().parent.parent / "models" / "default"
    assert detector_module.default_model_path() == expected


def test_concurrent_calls_from_many_threads_agree(detector, sample_texts):
    texts = sample_texts[:24]
    expected = detector.predict_proba(texts)

    def work(k: int) -> np.ndarray:
        rotated = texts[k:] + texts[:k]
        return np.roll(detector.predict_proba(rotated), k)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, range(12)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_batch_size_does_not_change_scores(tiny_bundle, detector, sample_texts):
    texts = sample_texts[:20]
    one = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=1)
    big = Detector.from_pretrained(tiny_bundle, provider="cpu", threads=2, batch_size=64)
    np.testing.assert_allclose(one.predict_proba(texts), detector.predict_proba(texts), atol=1e-6)
    np.testing.assert_allclose(big.predict_proba(texts), detector.predict_proba(texts), atol=1e-6)


def test_repr_and_properties(detector):
    assert "tiny-distilbert" in repr(detector)
    assert detector.threshold == detector.metadata.threshold == 0.5
    assert detector.providers == ["CPUExecutionProvider"]
