"""The feature store: the contract between extraction and classification (see store/format.py)."""
