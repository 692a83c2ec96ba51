"""One sharded lookup for the target model and the observation model's context tower.

The context tower (:class:`denoisrec.denoisers.observation.ContextTower`) has its own tables (``obs_<feature>``).
Kept in their own ``EmbeddingBagCollection`` they cost a second sharded module per step: a second input
distribution (KJT all-to-all), a second pooled-embedding all-to-all forward and backward, and a second fused
optimizer update; on 2 gloo ranks that was most of the observation model's 12% deficit against BCE
(benchmarks/README.md, "Observation model"). :func:`fold_context_tables` moves the tower's tables into the
model's own collection (TorchRec collections hold tables of different widths and poolings), so one sharded
module looks up both; :class:`SharedLookup` hands the collection's output to the tower in each forward.

The target model still reads only its own (preference) features from the pooled output: every model reads
its fields by name (:func:`denoisrec.models.embeddings.ordered_values`), so the extra ``obs_*`` features are
never interacted. Evaluation, ``predict`` and the export use ``f`` alone: the export drops the folded tables
(:attr:`SharedLookup.tables`).

State-dict keys: the tower's tables now live under the model's collection
(``model.<collection>.embedding_bags.obs_<feature>.weight`` instead of
``denoiser.tower.ebc.embedding_bags.obs_<feature>.weight``), so a checkpoint written before the fold is refused
on resume with a one-line error (:func:`refuse_unfolded_checkpoint`).

Example::

    lookup = fold_context_tables(model, denoiser.tower)   # before sharding
    model.register_forward_pre_hook(lookup.pre_hook)       # each call finds the (sharded, after DMP) collection
    logits = model(dense, kjt)                             # the tower receives the pooled output
    za, zb = denoiser.tower(kjt)
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection

from denoisrec.trainer.errors import CheckpointError

TOWER_KEY = "denoiser.tower.ebc."  # where the tower's tables lived before the fold (checkpoint keys)


def _model_collection(model: nn.Module) -> Tuple[str, EmbeddingBagCollection]:
    """The path and module of the model's own collection (tables ``t_<feature>``, not the linear ``w_`` ones)."""
    for path, m in model.named_modules():
        if isinstance(m, EmbeddingBagCollection) and all(c.name.startswith("t_") for c in m.embedding_bag_configs()):
            return path, m
    raise ValueError("fold_context_tables: the model has no EmbeddingBagCollection of t_<feature> tables")


class SharedLookup:
    """Hands the output of the model's collection at ``path`` to ``tower`` in each forward (a forward hook,
    re-registered when DMP has replaced the module by its sharded version).

    Attributes:
        path: the collection's path inside the model.
        tables: the folded table names (dropped from the exported model).
    """

    def __init__(self, path: str, tower: Any, tables: List[str]) -> None:
        self.path, self.tower, self.tables = path, tower, tables
        self._hooked: Optional[Tuple[int, Any]] = None  # (id of the hooked module, hook handle)

    def attach(self, model: nn.Module) -> None:
        module = model.get_submodule(self.path)
        if self._hooked is not None and self._hooked[0] == id(module):
            return
        if self._hooked is not None:
            self._hooked[1].remove()
        handle = module.register_forward_hook(lambda _m, _inp, out: self.tower.receive(out))
        self._hooked = (id(module), handle)

    def pre_hook(self, model: nn.Module, _inputs: Any) -> None:
        """A forward pre-hook for the model: :meth:`attach` before each of its calls."""
        self.attach(model)

    def exported(self, key: str) -> bool:
        """Whether state-dict ``key`` belongs in the exported model (``f`` alone: not a folded table)."""
        return not any(f"embedding_bags.{t}." in key for t in self.tables)


def fold_context_tables(model: nn.Module, tower: Any) -> SharedLookup:
    """Move ``tower``'s tables into ``model``'s collection (in place, before sharding); weights are kept
    (copied unless on ``meta``, where DMP initialises each table from its config).
    """
    path, ebc = _model_collection(model)
    own = tower.release_tables()
    configs = list(ebc.embedding_bag_configs()) + list(own.embedding_bag_configs())
    device = next(iter(ebc.parameters())).device
    merged = EmbeddingBagCollection(tables=configs, device=device)
    if device.type != "meta":
        with torch.no_grad():
            for src in (ebc, own):
                for name, bag in src.embedding_bags.items():
                    merged.embedding_bags[name].weight.copy_(bag.weight.to(device))
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, merged)
    return SharedLookup(path, tower, [c.name for c in own.embedding_bag_configs()])


def refuse_unfolded_checkpoint(path: str, checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> None:
    """A one-line error for a checkpoint whose tower tables sit in the tower's own collection (written before
    the fold) when the current model holds them in the shared one.
    """
    old = any(TOWER_KEY in k for k in checkpoint_keys)
    if old and not any(TOWER_KEY in k for k in model_keys):
        raise CheckpointError(
            f"{path}: written before the observation model's context tables moved into the model's "
            "EmbeddingBagCollection (keys denoiser.tower.ebc.*); this version cannot resume it: start a new run "
            "(or resume with the denoisrec version that wrote it)"
        )
