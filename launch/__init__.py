"""torchx components that start the trainer's entry point (``python -m denoisrec.trainer``).

This package names the entry point only; it never imports the trainer, the models or the denoisers, and the
trainer never imports it: ``denoisrec launch`` (:mod:`denoisrec.trainer.commands.launch`) hands torchx the
path of ``components.py``, as ``torchx run FILE:COMPONENT`` does. ``tests/test_layout.py`` checks both ways.
"""
