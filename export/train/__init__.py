"""Training: the run configuration, the training loop and its record, MiniLM-to-DistilBERT conversion and the
tokenizer fold (``python -m export.train``)."""
