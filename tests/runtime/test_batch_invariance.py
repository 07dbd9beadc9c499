"""One answer per text on the shipped model: a text's P(AI) alone equals its P(AI) in any batch, any order,
any batch size, and from any number of threads.

The shipped default is dynamic int8, whose activation scales ONNX Runtime takes over the whole input tensor;
the Detector runs such a graph one window per call (``BundleMetadata.batch_dependent``). The last test shows
that the property is not vacuous: batching those windows anyway moves the scores.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aidetect_infer import Detector
from aidetect_infer.bundle import load_bundle
from aidetect_infer.detector import DEFAULT_MODEL_DIR
from aidetect_infer.session import create_session
from aidetect_infer.tokenization import load_tokenizer
from tests.conftest import DATA_DIR

TOLERANCE = 1e-5
POOL_FILES = ("detectgpt_family.jsonl.gz", "l2r_rewrites.jsonl.gz", "outfox_essays.jsonl.gz")

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "aidetect.json").is_file(), reason=f"no shipped default model at {DEFAULT_MODEL_DIR}"
)


def _real_texts(per_file: int = 40) -> list[str]:
    """Real texts of every length: the first ``per_file`` records of three data sets, a few cut short, a few
    joined into texts of several windows."""
    texts: list[str] = []
    for name in POOL_FILES:
        path = DATA_DIR / name
        if not path.is_file():
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(per_file), f, strict=False)]
    short = [" ".join(t.split()[:n]) for t, n in zip(texts[:20], range(1, 60, 3), strict=False)]
    long = [" ".join(texts[i : i + 4]) for i in range(0, 24, 4)]
    return texts + short + long + ["", "ok", "Thanks!"]


POOL = _real_texts()
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def shipped() -> Detector:
    return Detector.from_pretrained(DEFAULT_MODEL_DIR, provider="cpu", threads=2)


@pytest.fixture(scope="module")
def with_batch_size() -> Callable[..., Detector]:
    """``with_batch_size(n, batch_invariant=True)``: a Detector over one pair of sessions of the shipped bundle
    (the two-thread session and the one-thread session its one-window calls share), as ``from_pretrained`` opens."""
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    session = create_session(bundle.model_path, provider="cpu", threads=2)
    parallel = create_session(bundle.model_path, provider="cpu", threads=1)
    tokenizer = load_tokenizer(bundle.tokenizer_path)

    def make(batch_size: int, *, batch_invariant: bool = True) -> Detector:
        return Detector(
            session=session, tokenizer=tokenizer, metadata=bundle.metadata, batch_size=batch_size,
            batch_invariant=batch_invariant, parallel_session=parallel,
        )  # fmt: skip

    return make


@pytest.fixture(scope="module")
def alone() -> dict[int, float]:
    """Each pool text scored on its own (filled lazily: examples only touch some)."""
    return {}


def _alone(shipped: Detector, cache: dict[int, float], index: int) -> float:
    if index not in cache:
        cache[index] = float(shipped.predict_proba(POOL[index])[0])
    return cache[index]


def test_the_shipped_model_is_batch_dependent_int8(shipped):
    """The premise: the default bundle's graph quantizes activations per call, so invariance is the runtime's job."""
    assert shipped.metadata.batch_dependent and shipped.metadata.precision == "int8"


@SETTINGS
@given(
    target=st.integers(0, len(POOL) - 1),
    neighbours=st.lists(st.integers(0, len(POOL) - 1), max_size=63),
    batch_size=st.integers(1, 64),
    position=st.integers(0, 63),
)
def test_a_text_alone_equals_the_text_in_any_batch(
    shipped, alone, with_batch_size, target, neighbours, batch_size, position
):
    batch = list(neighbours)
    batch.insert(min(position, len(batch)), target)
    detector = with_batch_size(batch_size)
    scores = detector.predict_proba([POOL[i] for i in batch])
    where = batch.index(target)
    assert abs(float(scores[where]) - _alone(shipped, alone, target)) <= TOLERANCE


@SETTINGS
@given(indices=st.lists(st.integers(0, len(POOL) - 1), min_size=2, max_size=24), seed=st.integers(0, 2**32 - 1))
def test_order_does_not_change_scores(shipped, indices, seed):
    texts = [POOL[i] for i in indices]
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    scores = shipped.predict_proba(texts)
    shuffled = shipped.predict_proba([texts[i] for i in order])
    np.testing.assert_allclose(shuffled, scores[order], atol=TOLERANCE, rtol=0)


def test_eight_threads_of_single_calls_equal_one_batched_call(shipped, alone):
    texts = POOL[:48]
    batched = shipped.predict_proba(texts)
    with ThreadPoolExecutor(8) as pool:
        singles = np.array(list(pool.map(lambda t: float(shipped.predict_proba(t)[0]), texts)))
    np.testing.assert_allclose(singles, batched, atol=TOLERANCE, rtol=0)


def test_batching_a_dynamic_int8_graph_anyway_moves_scores(with_batch_size):
    """``batch_invariant=False`` pads windows together: the per-tensor activation scale then spans every row,
    and scores move with the neighbours (which is why it is not the default)."""
    texts = POOL[:64]
    loose = with_batch_size(16, batch_invariant=False)
    together = loose.predict_proba(texts)
    singles = np.array([float(loose.predict_proba(t)[0]) for t in texts[:16]])
    assert np.abs(together[:16] - singles).max() > 1e-3
