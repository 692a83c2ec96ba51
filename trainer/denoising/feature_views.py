"""How a run uses the context features (schema ``role: context``: list position, scene, device, time).

Three ways, for every model (``model.context``):

- ``features``: the context is an ordinary input of the model (a schema without roles has no context);
- ``withhold``: the model and the readers never see the context columns;
- the observation model (``--denoiser observation``): the target model sees the preference features only,
  the denoiser's context tower reads the context (``model.context=auto`` picks this split for it); with
  ``features`` the target model reads the context too (``denoisrec tune``'s ``observation_context``).

``auto`` (the default) means ``features``, except under a denoiser with a context tower, where the target
model does not see the context. :func:`feature_views` returns the schema the readers use and the schema the
target model (and so the exported model file and ``predict``) is built from.

Example::

    data_schema, model_schema = feature_views(cfg, schema)
    readers = split_readers(cfg.data, data_schema, ...)
    spec = model_spec(cfg, model_schema)
"""

from __future__ import annotations

import warnings
from typing import Any, Tuple

from denoisrec.denoisers import DENOISERS
from denoisrec.trainer.data.schema import DataSchema

CONTEXT_MODES = ("auto", "features", "withhold")
# Denoiser options that name a feature its own models read as a user/item id (DeCA's MFs).
_ID_OPTIONS = {
    "deca": ("user_feature", "item_feature"),
    "deca_p": ("user_feature", "item_feature"),
    "observation_ids": ("user_feature", "item_feature"),
}
_ID_DEFAULTS = {"user_feature": "user_id", "item_feature": "item_id"}


def uses_context_tower(name: str) -> bool:
    """Whether denoiser ``name`` declares a context tower (``NEEDS.context_tower``)."""
    cls = DENOISERS.get(name)
    return cls is not None and cls.NEEDS.context_tower


def feature_views(cfg: Any, schema: DataSchema) -> Tuple[DataSchema, DataSchema]:
    """``(schema the readers use, schema the target model is built from)`` for ``cfg`` (a ``Config``)."""
    mode, name = cfg.model.context, cfg.denoiser.name
    if mode not in CONTEXT_MODES:
        raise ValueError(f"model.context={mode!r}: expected one of {CONTEXT_MODES}")
    context = schema.context_names
    for opt in _ID_OPTIONS.get(name, ()):
        feat = cfg.denoiser.params.get(opt, _ID_DEFAULTS[opt])
        if feat in context:
            raise ValueError(
                f"{name} option {opt}={feat!r}: a context feature (role: context); DeCA's models read "
                "preference ids (user / item), name a preference feature"
            )
    if uses_context_tower(name):
        if not context:
            raise ValueError(
                f"--denoiser {name}: the schema has no context features (role: context); with none the "
                "noise rates are constants and it degrades to BCE on a rescaled score: mark the "
                "context columns role: context in schema.json, or use --denoiser bce"
            )
        if mode == "features":
            warnings.warn(
                f"--denoiser {name} with model.context=features: the target model also reads the context "
                f"{context}, so it and the context tower share what the context explains (the split is not "
                "identified by observed labels); judge it on the trusted signal against model.context=auto "
                "(denoisrec tune runs both: observation and observation_context)",
                stacklevel=2,
            )
            return schema, schema
        return schema, schema.preference_only()
    if mode == "withhold":
        view = schema.preference_only()
        return view, view
    return schema, schema
