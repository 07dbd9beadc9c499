"""``python -m export.onnx_eval``: one bundle's metrics on ``[NAME=]PATH[@SUBSET]`` sets
(:func:`export.evaluate.__main__.main_bundle`)."""

import sys

from export.evaluate.__main__ import main_bundle as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
