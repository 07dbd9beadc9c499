"""Writing bundles: the verified, atomic bundle writer (:mod:`.write`) and the model card (:mod:`.card`)."""

from export.bundle.write import model_card, write_bundle
from export.files import replace_dir

__all__ = ["model_card", "replace_dir", "write_bundle"]
