"""Process groups, sharding (DMP ``wrap``/``unwrap``, the optimizers), the shared lookup, unsharded state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from denoisrec.trainer import lazy_exports

_EXPORTS: Dict[str, str] = {
    "DistEnv": "denoisrec.trainer.distributed.env",
    "SharedLookup": "denoisrec.trainer.distributed.shared_lookup",
    "TrainOptimizer": "denoisrec.trainer.distributed.sharding",
    "fold_denoiser_tables": "denoisrec.trainer.distributed.shared_lookup",
    "init_distributed": "denoisrec.trainer.distributed.env",
    "load_unsharded_state_dict": "denoisrec.trainer.distributed.unsharded",
    "make_plan": "denoisrec.trainer.distributed.sharding",
    "shutdown": "denoisrec.trainer.distributed.env",
    "train_optimizer": "denoisrec.trainer.distributed.sharding",
    "unsharded_state_dict": "denoisrec.trainer.distributed.unsharded",
    "unwrap": "denoisrec.trainer.distributed.sharding",
    "wrap": "denoisrec.trainer.distributed.sharding",
}
"""Public name → the module that defines it (imported on first use: no torch until then)."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from denoisrec.trainer.distributed.env import DistEnv as DistEnv
    from denoisrec.trainer.distributed.env import init_distributed as init_distributed
    from denoisrec.trainer.distributed.env import shutdown as shutdown
    from denoisrec.trainer.distributed.sharding import TrainOptimizer as TrainOptimizer
    from denoisrec.trainer.distributed.sharding import make_plan as make_plan
    from denoisrec.trainer.distributed.sharding import train_optimizer as train_optimizer
    from denoisrec.trainer.distributed.sharding import unwrap as unwrap
    from denoisrec.trainer.distributed.sharding import wrap as wrap
    from denoisrec.trainer.distributed.shared_lookup import SharedLookup as SharedLookup
    from denoisrec.trainer.distributed.shared_lookup import fold_denoiser_tables as fold_denoiser_tables
    from denoisrec.trainer.distributed.unsharded import load_unsharded_state_dict as load_unsharded_state_dict
    from denoisrec.trainer.distributed.unsharded import unsharded_state_dict as unsharded_state_dict
