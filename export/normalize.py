"""``python -m export.normalize``: fold Cyrillic and Greek look-alike letters in a checkpoint's tokenizer.

The fold itself is :mod:`export.train.normalize` (re-exported here under its documented name).
"""

import argparse
import sys

from export.console import fail
from export.errors import ExportError
from export.train.normalize import CONFUSABLES, FOLD_NAME, fold_checkpoint, fold_tokenizer_file, folds, with_fold

__all__ = ["CONFUSABLES", "FOLD_NAME", "fold_checkpoint", "fold_tokenizer_file", "folds", "main", "with_fold"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.normalize",
        description="Fold look-alike letters in a checkpoint's tokenizer (export.train.normalize).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory whose tokenizer.json to rewrite")
    args = p.parse_args(argv)
    try:
        changed = fold_checkpoint(args.checkpoint)
    except (ExportError, OSError, ValueError, KeyError) as exc:
        return fail(exc)
    print(f"{args.checkpoint}: {'folds look-alike letters now' if changed else 'already folds look-alike letters'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
