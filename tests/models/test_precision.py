"""``feature_precision`` / ``cl_precision``: what ``auto`` resolves to, and the warning when bf16
is asked for on a CPU that only emulates it."""
import logging

import pytest
import torch

from prismrec.models import layers
from prismrec.models.layers import resolve_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether the CPU multiplies bf16 natively; the warn-once cache starts empty."""
    def set_native(native: bool):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        layers._warn_emulated_bf16.cache_clear()
    yield set_native
    layers._warn_emulated_bf16.cache_clear()


def test_auto_follows_the_hardware(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("auto") == torch.bfloat16
    cpu_bf16(False)
    assert resolve_precision("auto") == torch.float32
    assert resolve_precision("auto", device="cuda:0") == torch.bfloat16
    assert resolve_precision("float32") == torch.float32


def test_explicit_bf16_on_an_emulating_cpu_is_kept_and_warned_once(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="prismrec.models.layers"):
        assert resolve_precision("bfloat16") == torch.bfloat16   # honoured: same arithmetic everywhere
        assert resolve_precision("bfloat16") == torch.bfloat16
    warnings = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(warnings) == 1 and "float32" in warnings[0].getMessage()


def test_no_warning_where_bf16_is_native(cpu_bf16, caplog):
    cpu_bf16(True)
    with caplog.at_level(logging.WARNING, logger="prismrec.models.layers"):
        assert resolve_precision("bfloat16") == torch.bfloat16
    assert not [r for r in caplog.records if "bf16" in r.getMessage()]
