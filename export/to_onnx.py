"""``python -m export.to_onnx``: the documented name of the ONNX build command (:mod:`export.onnx.__main__`)."""

import sys

from export.onnx.__main__ import build_parser, config_from_args, main, summary_table

__all__ = ["build_parser", "config_from_args", "main", "summary_table"]

if __name__ == "__main__":
    sys.exit(main())
