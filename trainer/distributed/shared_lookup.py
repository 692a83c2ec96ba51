"""One sharded lookup for the target model and the denoiser's own tables.

DeCA's MF heads (``deca_g_*``, ``deca_h_*``, ``deca_hp_*``) and the observation model's context tower
(``obs_<feature>``) have embedding tables of their own (:class:`~denoisrec.denoisers.shared_tables.SharedTables`,
declared by the denoiser in ``DenoiserNeeds.shared_tables``). Kept in their own ``EmbeddingBagCollection``
they cost a second sharded module per step: a second input distribution (KJT all-to-all), a second pooled
all-to-all forward and backward, and a second fused optimizer update (benchmarks/README.md has the measured
cost). :func:`fold_denoiser_tables`
moves those tables into the model's own collection before sharding (TorchRec collections hold tables of
different widths and poolings, and several tables may read one feature), so one sharded module looks up
both; :class:`SharedLookup` hands the collection's output to the denoiser's parts in each forward.

The target model still reads only its own features from the pooled output: every model reads its fields by
name (:func:`denoisrec.models.embeddings.ordered_values`, TorchRec's DLRM), so the extra tables are never
interacted. Where a folded table reads a feature the model reads too (the MF's ``user_id``, ``item_id``: its
own tables, of another width and meaning), TorchRec names both outputs ``<feature>@<table>``; the hook
renames the model's back to ``<feature>`` (a view, no copy; applied when TorchRec's awaitable is waited, so
the all-to-all still overlaps what the model computes before reading it). The model and the parts read the
output through one split (:class:`SplitOnce`), so its backward assembles the gradient once. Evaluation,
``predict`` and the export use ``f`` alone: the export drops the folded tables (:attr:`SharedLookup.tables`).

Sharding: TorchRec distributes a sharded collection once per *sharding type* (one input and one output
all-to-all each), so a folded table saves its all-to-alls only if it is sharded the way the model's own tables
are: the planner, free to pick any model-parallel type for the MF tables, put them column-wise beside the
model's table-wise ones (as many all-to-alls as before). :func:`aligned_constraints` constrains the folded
tables to the types the model's own model-parallel tables got in the first plan, and the factory plans again.

State-dict keys: the folded tables live under the model's collection
(``model.<collection>.embedding_bags.deca_h_user_id.weight`` instead of
``denoiser.mf.ebc.embedding_bags.deca_h_user_id.weight``), so a checkpoint written before the fold is refused
on resume with a one-line error (:func:`refuse_unfolded_checkpoint`).

Example::

    lookup = fold_denoiser_tables(model, denoiser)   # before sharding; None: nothing to fold
    model.register_forward_pre_hook(lookup.pre_hook)  # each call finds the (sharded, after DMP) collection
    logits = model(dense, kjt)                        # the denoiser's parts receive the pooled output
    mf = denoiser.mf(kjt)                             # {head: [B] logits}, from what it received
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedTensor
from torchrec.modules.embedding_modules import get_embedding_names_by_table

from denoisrec.denoisers import Denoiser
from denoisrec.denoisers.shared_tables import SharedTables
from denoisrec.trainer.errors import CheckpointError


def _model_collection(model: nn.Module) -> Optional[Tuple[str, EmbeddingBagCollection]]:
    """The path and module of the model's own collection (tables ``t_<feature>``, not the linear ``w_`` ones),
    or ``None`` for a model without one.
    """
    for path, m in model.named_modules():
        if isinstance(m, EmbeddingBagCollection) and all(c.name.startswith("t_") for c in m.embedding_bag_configs()):
            return path, m
    return None


class SplitOnce(KeyedTensor):
    """A ``KeyedTensor`` whose :meth:`to_dict` splits its values once and hands every caller the same views.

    The model and each denoiser part read the collection's one output by name (``to_dict``); split separately, each
    split's backward would rebuild a full ``[B, Σ D]`` gradient (zeros where that reader took nothing) and autograd
    would add them up. One split has one backward, which concatenates the readers' gradients once.
    """

    def __init__(self, keys: List[str], length_per_key: List[int], values: torch.Tensor, key_dim: int = 1) -> None:
        super().__init__(keys=keys, length_per_key=length_per_key, values=values, key_dim=key_dim)
        self._split: Optional[Dict[str, torch.Tensor]] = None

    def to_dict(self) -> Dict[str, torch.Tensor]:
        """``{key: [B, D_key]}`` views of the values, split on the first call."""
        if self._split is None:
            self._split = super().to_dict()
        return self._split


def _split_once(kt: KeyedTensor, names: Dict[str, str]) -> SplitOnce:
    """``kt`` with its keys renamed by ``names``, as a :class:`SplitOnce` (the same values tensor)."""
    return SplitOnce(
        keys=[names.get(k, k) for k in kt.keys()],
        length_per_key=kt.length_per_key(),
        values=kt.values(),
        key_dim=kt.key_dim(),
    )


class SharedLookup:
    """Hands the output of the model's collection at ``path`` to the denoiser's ``parts`` in each forward (a
    forward hook, re-registered when DMP has replaced the module by its sharded version).

    Attributes:
        path: the collection's path inside the model.
        tables: the folded table names (dropped from the exported model).
        renames: ``{"<feature>@t_<feature>": "<feature>"}`` for the model's features a folded table also reads.
    """

    def __init__(self, path: str, parts: List[SharedTables], tables: List[str], renames: Dict[str, str]) -> None:
        self.path, self.parts, self.tables, self.renames = path, parts, tables, renames
        self._hooked: Optional[Tuple[int, Any]] = None  # (id of the hooked module, hook handle)

    def _hook(self, _module: nn.Module, _inputs: Any, out: Any) -> Any:
        # The model and the parts share one split of the output (SplitOnce), with the model's keys renamed back.
        if isinstance(out, KeyedTensor):
            out = _split_once(out, self.renames)
        else:  # TorchRec's (lazy) awaitable of the sharded output: wrapped when it is waited on
            out.callbacks.append(lambda kt: _split_once(kt, self.renames))
        for part in self.parts:
            part.receive(out)
        return out

    def attach(self, model: nn.Module) -> None:
        module = model.get_submodule(self.path)
        if self._hooked is not None and self._hooked[0] == id(module):
            return
        if self._hooked is not None:
            self._hooked[1].remove()
        self._hooked = (id(module), module.register_forward_hook(self._hook))

    def pre_hook(self, model: nn.Module, _inputs: Any) -> None:
        """A forward pre-hook for the model: :meth:`attach` before each of its calls."""
        self.attach(model)

    def exported(self, key: str) -> bool:
        """Whether state-dict ``key`` belongs in the exported model (``f`` alone: not a folded table)."""
        return not any(f"embedding_bags.{t}." in key for t in self.tables)


def fold_tables(model: nn.Module, parts: List[SharedTables]) -> Optional[SharedLookup]:
    """Move the ``parts``' tables into ``model``'s collection (in place, before sharding); weights are kept
    (copied unless on ``meta``, where DMP initialises each table from its config). ``None`` (nothing folded:
    the parts keep their own lookup) when ``parts`` is empty or the model has no ``t_<feature>`` collection.
    """
    found = _model_collection(model)
    if not parts or found is None:
        return None
    path, ebc = found
    own = list(ebc.embedding_bag_configs())
    names = {c.name for c in own}
    released = [p.release_tables() for p in parts]
    added = [c for r in released for c in r.embedding_bag_configs()]
    clash = sorted(names & {c.name for c in added})
    if clash:
        raise ValueError(f"fold_tables: the denoiser's tables {clash} have the model's table names")
    configs = own + added
    device = next(iter(ebc.parameters())).device
    merged = EmbeddingBagCollection(tables=configs, device=device)
    if device.type != "meta":
        with torch.no_grad():
            for src in (ebc, *released):
                for name, bag in src.embedding_bags.items():
                    merged.embedding_bags[name].weight.copy_(bag.weight.to(device))
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, merged)
    before = get_embedding_names_by_table(own)
    after = get_embedding_names_by_table(configs)[: len(own)]
    renames = {a: b for ta, tb in zip(after, before) for a, b in zip(ta, tb) if a != b}
    return SharedLookup(path, parts, [c.name for c in added], renames)


def fold_denoiser_tables(model: nn.Module, denoiser: Denoiser) -> Optional[SharedLookup]:
    """:func:`fold_tables` for the parts the denoiser declares in ``needs.shared_tables``."""
    parts = [denoiser.get_submodule(p) for p in denoiser.needs.shared_tables]
    bad = [p for p, m in zip(denoiser.needs.shared_tables, parts) if not isinstance(m, SharedTables)]
    if bad:
        raise TypeError(f"--denoiser {denoiser.name}: shared_tables {bad} are not SharedTables parts")
    return fold_tables(model, parts)  # type: ignore[arg-type]  # checked above


def aligned_constraints(
    plan: Any, module: nn.Module, constraints: Optional[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    """Planner constraints that keep the folded tables to the sharding types ``plan`` gave the model's own
    model-parallel tables of the same collection, or ``None`` when they already share them (or nothing is
    folded, or the model's tables are all replicated).

    ``plan`` is a ``ShardingPlan`` of the :class:`~denoisrec.trainer.module.TrainModule` ``module``;
    ``constraints`` are the ones it was planned with (kept for every other table).
    """
    from torchrec.distributed.planner import ParameterConstraints

    lookup = getattr(module, "shared_lookup", None)
    if lookup is None:
        return None
    tables = plan.plan.get(f"model.{lookup.path}", {})
    own = {ps.sharding_type for t, ps in tables.items() if t not in lookup.tables} - {"data_parallel"}
    folded = {tables[t].sharding_type for t in lookup.tables if t in tables}
    if not own or folded <= own:
        return None
    out = dict(constraints or {})
    out.update({t: ParameterConstraints(sharding_types=sorted(own)) for t in lookup.tables})
    return out


_TABLE_KEY = re.compile(r"^(.*embedding_bags\.)([^.]+)\.weight$")


def refuse_unfolded_checkpoint(path: str, checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> None:
    """A one-line error for a checkpoint that holds a table somewhere the current model does not: a denoiser's
    table in the denoiser's own collection (written before the fold) when the model holds it in the shared one.

    ``checkpoint_keys`` are DCP's flattened keys (``model.<state key>``, optimizer states, ...); only the
    model's are compared. A checkpoint after the fold, or of a run without folded tables, passes.
    """
    where: Dict[str, str] = {}  # table -> its key prefix in the current model
    for k in model_keys:
        m = _TABLE_KEY.match(k)
        if m:
            where[m.group(2)] = m.group(1)
    moved: Dict[str, str] = {}  # table -> its prefix in the checkpoint
    for k in checkpoint_keys:
        m = _TABLE_KEY.match(k)
        if not k.startswith("model.") or not m or m.group(2) not in where:
            continue
        if not k.endswith(where[m.group(2)] + m.group(2) + ".weight"):
            moved[m.group(2)] = m.group(1)
    if moved:
        old = sorted({p[len("model.") :] for p in moved.values()})
        raise CheckpointError(
            f"{path}: written before the denoiser's tables {sorted(moved)} moved into the model's "
            f"EmbeddingBagCollection (keys {', '.join(o + '*' for o in old)}); this version cannot resume it: "
            "start a new run (or resume with the denoisrec version that wrote it)"
        )
