"""``python -m denoisrec.trainer [train options]``: the entry point torchrun and torchx start on every rank."""

import sys

from denoisrec.trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
