"""Datasets for ``pipeline extract``: one registry, one utterance table.

Every dataset yields a :class:`DatasetTable` whose ``table`` has the columns :data:`COLUMNS` (extra,
dataset-specific columns may follow) and whose ``problems`` list the protocol lines left out.
Importing this package registers ``asv19``, ``asv5``, ``asv21la``, ``asv21df``, ``itw``, ``mlaad``,
``codecfake``, ``manifest`` and ``demo``.
"""

from extract.datasets import (  # noqa: F401  (registration)
    asv5,
    asv19,
    asv21df,
    asv21la,
    codecfake,
    demo,
    itw,
    manifest,
    mlaad,
)
from extract.datasets.base import (
    COLUMNS,
    DATASETS,
    Dataset,
    DatasetError,
    DatasetTable,
    Problem,
    get_dataset,
    register_dataset,
    safe_join,
    validate_table,
)
from extract.datasets.demo import generate_demo_corpus

__all__ = [
    "COLUMNS",
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetTable",
    "Problem",
    "generate_demo_corpus",
    "get_dataset",
    "register_dataset",
    "safe_join",
    "validate_table",
]
