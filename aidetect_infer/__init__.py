"""aidetect-infer: tell AI-generated text from human writing with ONNX Runtime and a fast tokenizer.

>>> from aidetect_infer import Detector
>>> detector = Detector.from_pretrained("models/default")  # doctest: +SKIP
>>> detector.predict("Some text")  # doctest: +SKIP
Prediction(label='ai', score=0.97, threshold=0.5, windows=1)
"""

from aidetect_infer import errors
from aidetect_infer.bundle import BundleMetadata, load_bundle
from aidetect_infer.detector import Detector, Prediction
from aidetect_infer.errors import (
    AidetectError,
    BundleError,
    ChecksumMismatchError,
    InvalidInputError,
    InvalidValueError,
    ModelFilesMissingError,
    ProviderUnavailableError,
    UnsupportedFormatError,
)
from aidetect_infer.segments import Explanation, Segment

__version__ = "0.1.0"

__all__ = [
    "AidetectError",
    "BundleError",
    "BundleMetadata",
    "ChecksumMismatchError",
    "Detector",
    "Explanation",
    "InvalidInputError",
    "InvalidValueError",
    "ModelFilesMissingError",
    "Prediction",
    "ProviderUnavailableError",
    "Segment",
    "UnsupportedFormatError",
    "__version__",
    "errors",
    "load_bundle",
]
