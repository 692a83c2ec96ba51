"""``python -m denoisrec.trainer [train options]``: the entry point torchrun and torchx start on every rank.

Example::

    torchrun --nproc_per_node 2 -m denoisrec.trainer --data data/tiny --denoiser tce --steps 20
"""

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from denoisrec.trainer.cli import main


@record  # an uncaught exception's traceback goes to torchelastic's error file and its failure summary
def run() -> int:
    return main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(run())
