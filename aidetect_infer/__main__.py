"""``python -m aidetect_infer``: see :mod:`aidetect_infer.cli`."""

import sys

from aidetect_infer.cli import main

if __name__ == "__main__":
    sys.exit(main())
