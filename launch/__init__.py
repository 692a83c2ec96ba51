"""torchx components that start the trainer's entry point (``python -m denoisrec.trainer``).

This package names the entry point only; it never imports the trainer, the models or the denoisers.
"""
