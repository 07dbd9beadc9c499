"""Labelled data: reading records (:mod:`.records`), the group split (:mod:`.split`), domain-balanced draws
(:mod:`.mix`) and text perturbations (:mod:`.augment`)."""

from export.data.records import (
    DATA_DIR_ENV,
    HELD_OUT_PREFIX,
    REPO_DATA_DIR,
    DataError,
    Record,
    data_dir,
    dataset_name,
    describe_file,
    filter_records,
    in_validation,
    load_records,
    load_training_data,
    refuse_held_out,
    resolve_data_file,
    sha256_file,
    split_by_group,
    use_data_dir,
)
from export.data.split import Split

__all__ = [
    "DATA_DIR_ENV",
    "HELD_OUT_PREFIX",
    "REPO_DATA_DIR",
    "DataError",
    "Record",
    "Split",
    "data_dir",
    "dataset_name",
    "describe_file",
    "filter_records",
    "in_validation",
    "load_records",
    "load_training_data",
    "refuse_held_out",
    "resolve_data_file",
    "sha256_file",
    "split_by_group",
    "use_data_dir",
]
