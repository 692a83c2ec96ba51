"""Column roles of a denoisrec dataset: which Parquet columns feed which part of a :class:`Batch`.

A dataset directory holds ``schema.json`` beside its splits::

    <root>/schema.json
    <root>/train/part-00000.parquet ...
    <root>/valid/...
    <root>/test/...

``schema.json`` maps columns to roles (sparse single-valued ids, sparse multi-hot id lists, dense floats,
the observed label, the group id used by GAUC, a stable per-row key, and the ground-truth columns that only
evaluation and diagnostics read) and gives each sparse feature its table size. It also carries the two
bad-value policies:

- ``oov_policy`` (per schema, overridable per feature): ids outside ``[0, num_embeddings)`` are rejected
  (``"error"``) or hashed into the table (``"hash"``: ``splitmix64(id) mod num_embeddings``, in-range ids
  unchanged). Ids are never clipped.
- ``nan_policy``: NaN, ±inf or null dense values are rejected (``"error"``) or replaced by
  ``impute_value`` (``"impute"``). The reader counts every hashed id and imputed value.

The schema can also come from the training config (``data.schema``: a file path or an inline mapping of
the same keys) instead of ``<root>/schema.json``.

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
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import yaml

SCHEMA_FILE = "schema.json"
SPLITS = ("train", "valid", "test")
RANDOM_SPLIT = "valid_random"  # the optional randomised-exposure split, same schema as valid
ROLES = ("preference", "context")
OOV_POLICIES = ("error", "hash")
NAN_POLICIES = ("error", "impute")


@dataclass
class SparseFeature:
    """One categorical feature and its embedding table.

    Args:
        name: Parquet column; integer ids (``multi_hot=False``) or a list of integer ids (``multi_hot=True``).
        num_embeddings: table rows; ids must lie in ``[0, num_embeddings)`` unless the OOV policy hashes.
        multi_hot: the column is ``list<int>``; each row contributes a bag of ids.
        oov_policy: this feature's out-of-table policy (``"error"`` or ``"hash"``); ``None`` uses the
            schema's.
        role: ``"preference"`` (who the user is, what the item is, their attributes) or ``"context"`` (the
            conditions the label was observed under: list position, scene, device, time). See
            docs/ingest.md, "Feature roles"; dense columns are preference features.
    """

    name: str
    num_embeddings: int
    multi_hot: bool = False
    oov_policy: Optional[str] = None
    role: str = "preference"


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
        trusted_label: a 0/1 column holding a trusted (high-quality) label on the rows that have one and null
            elsewhere (purchases, long dwell, explicit ratings, a rated sample); ``None``: the data has none.
            Selection and diagnostics read it (``eval.select_on``); it is never a feature.
        oov_policy: ``"error"`` rejects ids outside ``[0, num_embeddings)``; ``"hash"`` maps them into the
            table with ``splitmix64(id) mod num_embeddings`` (negative ids included; ids inside the table
            are kept), counted in the reader's report. A feature's own ``oov_policy`` overrides it.
        nan_policy: ``"error"`` rejects NaN, ±inf and null dense values; ``"impute"`` replaces them with
            ``impute_value``, counted per column in the reader's report.
        impute_value: the value ``"impute"`` writes.
    """

    sparse: List[SparseFeature]
    dense: List[str] = field(default_factory=list)
    label: str = "label"
    group_id: Optional[str] = "user_id"
    sample_id: Optional[str] = "row_id"
    clean_label: Optional[str] = "clean_label"
    is_noisy: Optional[str] = "is_noisy"
    trusted_label: Optional[str] = None
    oov_policy: str = "error"
    nan_policy: str = "error"
    impute_value: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.oov_policy not in OOV_POLICIES:
            raise ValueError(f"schema option oov_policy={self.oov_policy!r}: expected one of {OOV_POLICIES}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"schema option nan_policy={self.nan_policy!r}: expected one of {NAN_POLICIES}")
        for f in self.sparse:
            if f.role not in ROLES:
                raise ValueError(f"schema: sparse feature {f.name!r} has role={f.role!r}; expected one of {ROLES}")
            if f.oov_policy is not None and f.oov_policy not in OOV_POLICIES:
                raise ValueError(
                    f"schema: sparse feature {f.name!r} has oov_policy={f.oov_policy!r}; "
                    f"expected one of {OOV_POLICIES} or null"
                )
        if not self.label:
            raise ValueError("schema: a label column is required")
        names = [f.name for f in self.sparse]
        if len(set(names)) != len(names):
            raise ValueError(f"schema: duplicate sparse feature names in {names}")
        for f in self.sparse:
            if f.num_embeddings <= 0:
                raise ValueError(f"schema: sparse feature {f.name!r} has num_embeddings={f.num_embeddings}")
        check_roles(self)

    @property
    def sparse_names(self) -> List[str]:
        return [f.name for f in self.sparse]

    @property
    def context_names(self) -> List[str]:
        """The sparse features with role ``context`` (none for a schema without roles)."""
        return [f.name for f in self.sparse if f.role == "context"]

    def preference_only(self) -> "DataSchema":
        """A copy without the context features: what a model that must not see the context reads."""
        d = self.to_dict()
        d["sparse"] = [f for f in d["sparse"] if f["role"] != "context"]
        return DataSchema.from_dict(d)

    def oov_policy_of(self, feature: SparseFeature) -> str:
        """The out-of-table policy that applies to ``feature``."""
        return feature.oov_policy or self.oov_policy

    def with_policies(self, oov_policy: Optional[str] = None, nan_policy: Optional[str] = None) -> "DataSchema":
        """A copy with the schema-wide policies overridden (``None`` keeps the schema's)."""
        d = self.to_dict()
        if oov_policy is not None:
            d["oov_policy"] = oov_policy
        if nan_policy is not None:
            d["nan_policy"] = nan_policy
        return DataSchema.from_dict(d)

    @property
    def ground_truth(self) -> bool:
        """True when the schema names both ground-truth columns."""
        return self.clean_label is not None and self.is_noisy is not None

    def columns(self, with_ground_truth: bool = True, with_trusted: bool = False) -> List[str]:
        """Every column this schema reads, without duplicates, in a stable order (the trusted label last, when
        ``with_trusted`` and the schema names one)."""
        cols: List[str] = [f.name for f in self.sparse] + list(self.dense) + [self.label]
        for c in (self.group_id, self.sample_id):
            if c is not None:
                cols.append(c)
        if with_ground_truth:
            for c in (self.clean_label, self.is_noisy):
                if c is not None:
                    cols.append(c)
        if with_trusted and self.trusted_label is not None:
            cols.append(self.trusted_label)
        return list(dict.fromkeys(cols))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataSchema":
        if not isinstance(d, dict):
            raise ValueError(f"a schema must be a mapping, got {type(d).__name__}")
        d = dict(d)
        sparse = d.get("sparse", [])
        if not isinstance(sparse, list):
            raise ValueError("schema key 'sparse' must be a list of features")
        known = {"name", "num_embeddings", "multi_hot", "oov_policy", "role"}
        feats = []
        for f in sparse:
            if not isinstance(f, dict) or set(f) - known or "name" not in f or "num_embeddings" not in f:
                raise ValueError(
                    f"schema: sparse feature {f!r}: expected a mapping with name, num_embeddings "
                    f"and optionally multi_hot, oov_policy, role"
                )
            _check_feature_types(f)
            feats.append(SparseFeature(**f))
        d["sparse"] = feats
        dense = d.get("dense", [])
        if not isinstance(dense, list) or not all(isinstance(c, str) for c in dense):
            bad = dense if not isinstance(dense, list) else next(c for c in dense if not isinstance(c, str))
            raise ValueError(f"schema key 'dense': {bad!r} is not a column name; expected a list of column names")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"schema: unknown key(s) {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str, filesystem: Any = None) -> "DataSchema":
        """Load ``schema.json`` from a file path or from a dataset directory (local, a URI such as
        ``s3://bucket/ds`` or ``memory://ds``, or a path on ``filesystem``: a ``pyarrow.fs`` or ``fsspec``
        filesystem).
        """
        from denoisrec.trainer.data.fs import DataPath

        dp = DataPath.resolve(path, filesystem)
        if dp.is_dir():
            dp = dp.join(SCHEMA_FILE)
        elif not dp.is_file():
            raise FileNotFoundError(
                f"{dp}: no such dataset folder (nor a schema file); `denoisrec gen-data` or `denoisrec convert` "
                "makes one"
            )
        if not dp.is_file():
            raise FileNotFoundError(
                f"{dp}: no schema file. A dataset directory needs {SCHEMA_FILE} "
                "(written by `denoisrec gen-data`), or give the schema in the config (data.schema)."
            )
        if dp.path.endswith(".parquet"):
            raise ValueError(
                f"{dp}: a Parquet file, not a dataset; --data takes the dataset's directory (with {SCHEMA_FILE} "
                "and train/, valid/, test/), or a schema file"
            )
        try:
            text = dp.read_text()
        except UnicodeDecodeError:
            raise ValueError(
                f"{dp}: not a text file, so not a schema; --data takes the dataset's directory (with {SCHEMA_FILE})"
            ) from None
        try:
            raw = yaml.safe_load(text) if dp.path.endswith((".yaml", ".yml")) else json.loads(text)
            return cls.from_dict(raw)
        except (TypeError, ValueError, yaml.YAMLError) as e:
            raise ValueError(f"{dp}: invalid schema: {e}") from e

    @classmethod
    def from_config(cls, value: Any, data_path: str, filesystem: Any = None) -> "DataSchema":
        """The schema a run uses: ``value`` is ``None`` (``<data_path>/schema.json``), a path to a schema
        file (JSON or YAML), or an inline mapping (the config's ``data.schema``).
        """
        if value is None:
            return cls.load(data_path, filesystem)
        if isinstance(value, dict):
            try:
                return cls.from_dict(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"config data.schema: invalid schema: {e}") from e
        if isinstance(value, str):
            return cls.load(value, filesystem)
        raise ValueError(f"config data.schema={value!r}: expected null, a path or a mapping")


def _check_feature_types(f: Dict[str, Any]) -> None:
    """One sparse feature's values have their types: ``num_embeddings`` a positive integer (not ``8.7``,
    ``"8"`` or ``true``), ``multi_hot`` a boolean, ``name`` a string.
    """
    name = f["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"schema: sparse feature name {name!r}: expected a column name (a string)")
    n = f["num_embeddings"]
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(
            f"schema: sparse feature {name!r} has num_embeddings={n!r} ({type(n).__name__}); expected a "
            "positive integer (the table's row count)"
        )
    if "multi_hot" in f and not isinstance(f["multi_hot"], bool):
        raise ValueError(
            f"schema: sparse feature {name!r} has multi_hot={f['multi_hot']!r}; expected true or false"
        )


def check_roles(schema: "DataSchema") -> None:
    """The columns that carry the answer are never features.

    The label, the ground truth (``clean_label``, ``is_noisy``), the trusted label and the sample id may be
    neither sparse nor dense, and the group id not dense. (The group id may be a sparse feature: a user-id embedding is ordinary,
    GAUC only groups by it.)
    """
    kinds = {**{f.name: "sparse" for f in schema.sparse}, **{c: "dense" for c in schema.dense}}
    for role in ("label", "clean_label", "is_noisy", "trusted_label", "sample_id", "group_id"):
        col = getattr(schema, role)
        kind = kinds.get(col) if col is not None else None
        if kind is None or (role == "group_id" and kind == "sparse"):
            continue
        raise ValueError(
            f"schema: column {col!r} is the {role} and also listed under '{kind}'; the label, the "
            "ground truth, the trusted label and the sample id can never be features, the group id only a sparse one: "
            f"remove it from '{kind}'"
        )
