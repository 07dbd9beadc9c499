"""Fixtures for the runtime tests: detectors on the tiny bundles and an independent PyTorch reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from aidetect_infer import Detector


@pytest.fixture(scope="session")
def detector(tiny_bundle: Path) -> Detector:
    """A CPU detector on the tiny DistilBERT bundle (batch size 4, so batching paths are exercised)."""
    return Detector.from_pretrained(tiny_bundle, provider="cpu", threads=1, batch_size=4)


@pytest.fixture(scope="session")
def bert_detector(tiny_bert_bundle: Path) -> Detector:
    """A CPU detector on the tiny BERT bundle (its graph takes token_type_ids)."""
    return Detector.from_pretrained(tiny_bert_bundle, provider="cpu", threads=1, batch_size=4)


def torch_window_proba(model: Any, ids: Sequence[int]) -> float:
    """P(class 1) of one framed token sequence, run alone (no padding) in PyTorch, softmax in float64."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(ids)], dtype=torch.int64)).logits
    return float(torch.softmax(logits.double(), dim=-1)[0, 1])


@pytest.fixture(scope="session")
def torch_window() -> Callable[[Any, Sequence[int]], float]:
    """:func:`torch_window_proba`."""
    return torch_window_proba


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_bundle: Path) -> Any:
    """The bundle's tokenizer loaded independently (its own post-processor adds the specials)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))


@pytest.fixture(scope="session")
def torch_reference(tiny_model: Any, hf_tokenizer: Any) -> Callable[[Sequence[str]], NDArray[np.float64]]:
    """P(AI) of texts that fit one window: the tokenizer's own ``encode``, then PyTorch, one by one."""

    def reference(texts: Sequence[str], model: Any = tiny_model) -> NDArray[np.float64]:
        probs = [torch_window_proba(model, hf_tokenizer.encode(t).ids) for t in texts]
        return np.array(probs, dtype=np.float64)

    return reference
