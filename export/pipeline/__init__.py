"""The pipeline: every stage of a TOML recipe, from the data to the shipped bundle (``python -m export.pipeline``)."""
