r"""``python -m denoisrec.trainer.serving.predict_cli ARGS`` is ``denoisrec predict ARGS``: the form torchrun starts.

The command itself is :mod:`denoisrec.trainer.commands.predict` (arguments, process group, printed report)
over :func:`denoisrec.trainer.serving.predict.predict_file` (the scoring).

Example::

    torchrun --nproc_per_node 2 -m denoisrec.trainer.serving.predict_cli --model-file runs/x/model.pt \
        --data data/small/test --out runs/x/scores --keep-columns user_id,item_id,row_id
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from denoisrec.trainer.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))
