"""python/tests/test_session.py - kernc.Session: greedy generation equals argmax over full
recomputation with a compiled model; decode's logits equal the full model's; paged caches,
sampling determinism, batches, errors."""
import numpy as np
import pytest

import kernc
from conftest import GPT2_TINY, ort_run

PROMPT = [5, 17, 42, 9, 3]


def greedy_full(run, prompt, n):
    """n tokens of greedy decoding by recomputing the whole sequence each step."""
    ids = list(prompt)
    for _ in range(n):
        logits = run(np.array([ids], np.int64))
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt):]


def test_generate_greedy_equals_full_recompute(gpt2_tiny):
    want = greedy_full(lambda x: gpt2_tiny.run({"input_ids": x})["logits"], PROMPT, 8)
    with kernc.Session(GPT2_TINY, threads=2, max_len=64) as s:
        assert s.generate(PROMPT, max_new=8) == want
        # the same through ONNX Runtime's logits
        ort = greedy_full(lambda x: ort_run(GPT2_TINY, {"input_ids": x})["logits"], PROMPT, 8)
        assert ort == want
    with kernc.Session(GPT2_TINY, threads=1, paged=True, max_tokens=256, block_size=4) as s:
        assert s.generate(PROMPT, max_new=8) == want


def test_decode_logits_match_full_model(gpt2_tiny):
    with kernc.Session(GPT2_TINY, max_len=32, max_seqs=2) as s:
        assert s.vocab == 100 and s.cache_bytes_per_token > 0
        seq = s.seq_new()
        first = s.decode(seq, PROMPT)
        assert first.shape == (100,) and s.seq_len(seq) == len(PROMPT)
        nxt = s.decode(seq, [7])
        full = gpt2_tiny.run({"input_ids": np.array([PROMPT + [7]], np.int64)})["logits"][0]
        np.testing.assert_allclose(first, full[len(PROMPT) - 1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(nxt, full[-1], rtol=1e-4, atol=1e-4)
        s.truncate(seq, 2)
        every = s.decode(seq, PROMPT[2:] + [7], all=True)
        np.testing.assert_allclose(every, full[2:], rtol=1e-4, atol=1e-4)
        assert s.decode(seq, [1], logits=False) is None
        s.seq_free(seq)
        assert s.seq_len(seq) == -1


def test_sampling_batches_and_errors():
    with kernc.Session(GPT2_TINY, max_len=64, max_seqs=2) as s:
        a = s.generate(PROMPT, max_new=6, temperature=0.8, top_k=20, top_p=0.9, seed=7)
        b = s.generate(PROMPT, max_new=6, temperature=0.8, top_k=20, top_p=0.9, seed=7)
        assert a == b and len(a) == 6 and all(0 <= t < 100 for t in a)
        both = s.generate([PROMPT, PROMPT[:3]], max_new=4)
        assert both[0] == s.generate(PROMPT, max_new=4) and len(both[1]) == 4
        stop = s.generate(PROMPT, max_new=8, eos=both[0][1])
        assert stop == both[0][:2]
        beam = s.generate(PROMPT, max_new=4, num_beams=2)
        assert 1 <= len(beam) <= 5
        with pytest.raises(kernc.KernCError, match="kc_session_decode"):
            s.decode(12345, [1])
