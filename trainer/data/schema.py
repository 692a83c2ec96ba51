"""Column roles of a denoisrec dataset: which Parquet columns feed which part of a :class:`Batch`.

A dataset directory holds ``schema.json`` beside its splits::

    <root>/schema.json
    <root>/train/part-00000.parquet ...
    <root>/valid/...
    <root>/test/...

``schema.json`` maps columns to roles (sparse single-valued ids, sparse multi-hot id lists, dense floats,
the observed label, the group id used by GAUC, a stable per-row key, and the ground-truth columns that only
evaluation and diagnostics read) and gives each sparse feature its table size.

Example::

    schema = DataSchema(
        sparse=[SparseFeature("user_id", 1000), SparseFeature("tags", 64, multi_hot=True)],
        dense=["dense_0"],
    )
    schema.save("/tmp/ds/schema.json")
    assert DataSchema.load("/tmp/ds").sparse[1].multi_hot
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA_FILE = "schema.json"
SPLITS = ("train", "valid", "test")
OOV_POLICIES = ("error", "hash")


@dataclass
class SparseFeature:
    """One categorical feature and its embedding table.

    Args:
        name: Parquet column; integer ids (``multi_hot=False``) or a list of integer ids (``multi_hot=True``).
        num_embeddings: table rows; ids must lie in ``[0, num_embeddings)`` unless the OOV policy hashes.
        multi_hot: the column is ``list<int>``; each row contributes a bag of ids.
    """

    name: str
    num_embeddings: int
    multi_hot: bool = False


@dataclass
class DataSchema:
    """Column roles and table sizes of a dataset (see module docstring).

    Args:
        sparse: categorical features, one embedding table each.
        dense: float feature columns, in the order of the dense tensor.
        label: the observed (noisy) 0/1 label; the only label training sees.
        group_id: the column GAUC groups by (the user id); may also be a sparse feature.
        sample_id: a stable per-row key (unique within a dataset) used to break ties in denoisers and to
            account for rows read.
        clean_label: ground-truth label (evaluation and diagnostics only), if the data has it.
        is_noisy: ground-truth flag ``label != clean_label``, if the data has it.
        oov_policy: ``"error"`` rejects ids outside ``[0, num_embeddings)``; ``"hash"`` maps them into the
            table with ``id mod num_embeddings`` (negative ids included), counted in the reader's report.
    """

    sparse: List[SparseFeature]
    dense: List[str] = field(default_factory=list)
    label: str = "label"
    group_id: Optional[str] = "user_id"
    sample_id: Optional[str] = "row_id"
    clean_label: Optional[str] = "clean_label"
    is_noisy: Optional[str] = "is_noisy"
    oov_policy: str = "error"
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.oov_policy not in OOV_POLICIES:
            raise ValueError(f"schema option oov_policy={self.oov_policy!r}: expected one of {OOV_POLICIES}")
        names = [f.name for f in self.sparse]
        if len(set(names)) != len(names):
            raise ValueError(f"schema: duplicate sparse feature names in {names}")
        for f in self.sparse:
            if f.num_embeddings <= 0:
                raise ValueError(f"schema: sparse feature {f.name!r} has num_embeddings={f.num_embeddings}")

    @property
    def sparse_names(self) -> List[str]:
        return [f.name for f in self.sparse]

    @property
    def ground_truth(self) -> bool:
        """True when the schema names both ground-truth columns."""
        return self.clean_label is not None and self.is_noisy is not None

    def columns(self, with_ground_truth: bool = True) -> List[str]:
        """Every column this schema reads, without duplicates, in a stable order."""
        cols: List[str] = [f.name for f in self.sparse] + list(self.dense) + [self.label]
        for c in (self.group_id, self.sample_id):
            if c is not None:
                cols.append(c)
        if with_ground_truth:
            for c in (self.clean_label, self.is_noisy):
                if c is not None:
                    cols.append(c)
        return list(dict.fromkeys(cols))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataSchema":
        d = dict(d)
        d["sparse"] = [SparseFeature(**f) for f in d.get("sparse", [])]
        return cls(**d)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path: str) -> "DataSchema":
        """Load ``schema.json`` from a file path or from a dataset directory."""
        if os.path.isdir(path):
            path = os.path.join(path, SCHEMA_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: no schema file. A dataset directory needs {SCHEMA_FILE} "
                "(written by `denoisrec gen-data` / `denoisrec convert`)."
            )
        with open(path) as f:
            try:
                return cls.from_dict(json.load(f))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: invalid schema: {e}") from e
