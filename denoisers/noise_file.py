"""A given observation noise model, read from a JSON file instead of learnt.

The observation model's examination form (:mod:`denoisrec.denoisers.observation`) explains each observed label by
an attention probability ``e(c) = σ(a(c))`` over the context and two inattentive rates::

    a(c) = bias + Σ_k A_k[c_k],   h(c) = (1 − e(c))·q₀,   1 − h'(c) = (1 − e(c))·q₁           (examination)

When that noise model is known — measured on randomised traffic (result randomisation, intervention harvesting), or
the generator's truth (``denoisrec gen-data`` writes it as ``<out>/noise_model.json``) — ``noise_file``
fixes it and only the preference model ``f`` trains. With the truth it is an oracle: the best any learnt noise
model can do on that data.

File format (every context feature the file names must be a single-valued ``role: context`` feature of the
schema, with one logit per table row; features it does not name add 0)::

    {"form": "examination", "bias": 1.4, "q0": 0.55, "q1": 0.5,
     "attention": {"position": [0.0, 0.0, -0.07, ...], "scene": [0.3, -0.9, ...]}}

Shapes: :meth:`NoiseModel.attention_logit` maps a KJT with ``B`` rows per feature to ``[B]``.

Example::

    nm = NoiseModel.read("runs/noise.json", {"position": 31, "scene": 6})
    za = nm.attention_logit(batch.sparse_features)      # [B]
    u = nm.rates_logits(za)                             # [2]: logit q₀, logit q₁
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class NoiseModel:
    """An examination noise model: attention logits per context value and the inattentive rates ``q₀, q₁``.

    Args:
        bias: the attention logit's offset.
        q0: ``P(ỹ=1 | y=0, inattentive)``, in ``(0, 1)``.
        q1: ``P(ỹ=0 | y=1, inattentive)``, in ``(0, 1)``.
        attention: ``{feature: [logit per table row]}``.
        source: where the model came from (named in errors).
    """

    def __init__(
        self, bias: float, q0: float, q1: float, attention: Mapping[str, List[float]], source: str = "noise model"
    ) -> None:
        for k, v in (("q0", q0), ("q1", q1)):
            if not 0.0 < v < 1.0:
                raise ValueError(f"{source}: {k}={v} must lie in (0, 1)")
        self.bias, self.q0, self.q1, self.source = float(bias), float(q0), float(q1), source
        self.tables = {f: torch.tensor([float(x) for x in v], dtype=torch.float64) for f, v in attention.items()}

    @classmethod
    def read(cls, path: str, context_tables: Mapping[str, int]) -> "NoiseModel":
        """Load ``path`` and check it against the schema's context tables (one-line errors naming file and key)."""
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"observation option noise_file={path!r}: cannot read it ({e})") from None
        return cls.from_dict(doc, context_tables, f"noise_file {path}")

    @classmethod
    def from_dict(cls, doc: Any, context_tables: Mapping[str, int], source: str) -> "NoiseModel":
        """Build from the file's parsed JSON (see the module docstring for the format)."""
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: expected a JSON object")
        if doc.get("form", "examination") != "examination":
            raise ValueError(f"{source}: form={doc.get('form')!r}; only form 'examination' is supported")
        missing = [k for k in ("bias", "q0", "q1", "attention") if k not in doc]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        for k in ("bias", "q0", "q1"):
            v = doc[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(
                    f"{source}: {k}={v!r} ({type(v).__name__}); expected a finite number"
                    + (" (a JSON number, not a string)" if isinstance(v, str) else "")
                )
        att = doc["attention"]
        if not isinstance(att, dict):
            raise ValueError(f"{source}: 'attention' must map context features to lists of logits")
        for feat, logits in att.items():
            if feat not in context_tables:
                raise ValueError(
                    f"{source}: attention feature {feat!r} is not a context feature of the schema "
                    f"(context features: {sorted(context_tables)})"
                )
            if not isinstance(logits, list) or len(logits) != int(context_tables[feat]):
                n = len(logits) if isinstance(logits, list) else type(logits).__name__
                raise ValueError(
                    f"{source}: attention[{feat!r}] has {n} logits; the schema's table has {context_tables[feat]} rows"
                )
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in logits):
                raise ValueError(f"{source}: attention[{feat!r}] holds a non-finite or non-numeric logit")
        return cls(doc["bias"], doc["q0"], doc["q1"], att, source)

    def attention_logit(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """``a(c)`` ``[B]`` (float32) for the rows of ``kjt`` (single-valued context features)."""
        feats = kjt.to_dict()
        out: torch.Tensor = torch.full((kjt.stride(),), self.bias, dtype=torch.float64, device=kjt.values().device)
        for f, table in self.tables.items():
            jt = feats.get(f)
            if jt is None:
                raise ValueError(f"{self.source}: the batch has no feature {f!r}")
            ids = jt.values()
            if ids.numel() != out.numel():
                raise ValueError(f"{self.source}: feature {f!r} is not single-valued in this batch")
            if table.device != ids.device:
                self.tables[f] = table = table.to(ids.device)
            out = out + table[ids.to(torch.int64)]
        return out.to(torch.float32)

    def rates_logits(self, like: torch.Tensor) -> torch.Tensor:
        """``[logit q₀, logit q₁]`` ``[2]`` on ``like``'s device and dtype."""
        return torch.tensor(
            [math.log(self.q0 / (1 - self.q0)), math.log(self.q1 / (1 - self.q1))], dtype=like.dtype, device=like.device
        )

    def to_dict(self) -> Dict[str, Any]:
        """The file's content."""
        return {
            "form": "examination",
            "bias": self.bias,
            "q0": self.q0,
            "q1": self.q1,
            "attention": {f: t.tolist() for f, t in self.tables.items()},
        }
