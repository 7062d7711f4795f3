"""python/tests/test_dump.py - kernc.dump: the IR after the pipeline, after every pass, with a
pass list of one's own, as graphviz dot, and its errors."""
import pytest

import kernc
from conftest import GPT2_TINY


def test_dump_after_default_pipeline():
    text = kernc.dump(GPT2_TINY)
    assert text.startswith("# kir 1")
    assert "graph @" in text
    for op in ("attention(", "layer_norm(", "matmul"):
        assert op in text, op
    assert "softmax(" not in text  # fused into attention


def test_dump_after_all():
    text = kernc.dump(GPT2_TINY, after_all=True)
    headers = [ln for ln in text.splitlines() if ln.startswith("# kir 1") and "after=" in ln]
    assert len(headers) >= 5
    assert any("after=infer" in h for h in headers)
    assert any("after=fuse-attention" in h for h in headers)
    assert text.rstrip().endswith("}")


def test_dump_passes_and_dot():
    raw = kernc.dump(GPT2_TINY, passes="")
    assert "softmax(" in raw and "attention(" not in raw
    some = kernc.dump(GPT2_TINY, passes="infer,canonicalize,fuse-norm")
    assert "layer_norm(" in some and "attention(" not in some
    dot = kernc.dump(GPT2_TINY, format="dot")
    assert dot.lstrip().startswith("digraph")
    with pytest.raises(kernc.KernCError, match="bogus"):
        kernc.dump(GPT2_TINY, passes="bogus")
    with pytest.raises(ValueError):
        kernc.dump(GPT2_TINY, format="svg")
