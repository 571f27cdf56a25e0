"""faiss, imported quietly.

faiss's loader logs each instruction-set build it tries ("Could not load library with AVX512
support due to: ModuleNotFoundError ...") at INFO level, which reads like an error in the output
of every command that ranks items. Those records are dropped; real failures still raise.
"""
from __future__ import annotations

import functools
import logging


@functools.cache  # ranking calls it per user block; setLevel walks every logger
def import_faiss():
    """The ``faiss`` module, with its loader's INFO records silenced."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss
