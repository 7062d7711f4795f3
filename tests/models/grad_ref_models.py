#!/usr/bin/python3
"""tests/models/grad_ref_models.py - PyTorch autograd references for kc_grad on the ONNX test
models (tests/models/{gpt2,llama,bert}_tiny/model.onnx), read by tests/test_grad.c.

For each model: the module of tests/models/hf_modules.py, built with make_models.py's seeds (the
float32 weights of the committed model.onnx, checked value by value), in float64, runs on
test_data_set_0's inputs; the loss is sum(y * y) over the model's first output, as test_grad.c
adds it to the imported graph; loss.backward() gives the gradients.

The exporter renamed or transposed some weights (nn.Linear weights become MatMul initializers
holding W^T; GPT-2's tied embedding appears twice, as wte and as a transposed copy), so the
script writes grad_ref/<model>/map.txt: one line "INITIALIZER PARAM T" per float initializer of
the ONNX file that is a parameter or its transpose (T = 1: transposed), found by comparing
values (an initializer that matches no parameter is a constant the exporter folded, e.g. an
expand shape). test_grad.c sums kernc's INITIALIZER.grad (transposed back where T = 1) per PARAM and
compares with grad_ref/<model>/<PARAM>.bin (float32, row-major; float64 gradients rounded).
Also written: input_<j>.bin (the int64 inputs, each [1, 7]) and loss.bin (float64).

opset23_tiny (tests/models/make_opset23.py: ONNX Attention-23, RMSNormalization and
RotaryEmbedding, imported as kernc's attention, rms_normalization and rotary) has no PyTorch
module: opset23_forward() below writes its graph in float64 torch ops over the model's own
initializers (checked against test_data_set_0's committed logits), so map.txt maps every
float initializer to itself; cos_cache and sin_cache are constants (test_grad.c differentiates
every initializer but them).

Run with Debian's Python (torch 1.13, onnx 1.12): /usr/bin/python3 tests/models/grad_ref_models.py
[NAME...] (default: every model)
"""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hf_modules import BertModel, Gpt2Model, LlamaModel  # noqa: E402
from make_models import BertCfg, Gpt2Cfg, LlamaCfg  # noqa: E402

MODELS = [("gpt2_tiny", Gpt2Model, Gpt2Cfg), ("llama_tiny", LlamaModel, LlamaCfg),
          ("bert_tiny", BertModel, BertCfg)]


def built_models():
    """The modules exactly as make_models.py's main() builds them (same seeds, same order)."""
    from hf_modules import randomize_norms
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(0)
    bert = BertModel(BertCfg)
    randomize_norms(bert, gen)
    torch.manual_seed(1)
    gpt2 = Gpt2Model(Gpt2Cfg)
    randomize_norms(gpt2, gen)
    torch.manual_seed(2)
    llama = LlamaModel(LlamaCfg)
    randomize_norms(llama, gen)
    return {"bert_tiny": bert, "gpt2_tiny": gpt2, "llama_tiny": llama}


def _rms(x, w, eps=1e-6):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _rope(x, cos, sin):
    """ONNX RotaryEmbedding, rotate-half over the whole head: x [B, H, S, D], cos/sin [S, D/2]."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _attention(q, k, v, scale, allowed):
    """ONNX Attention-23 on [B, H, S, D] (kv heads repeated: query head h reads h // group);
    allowed: bool [.., S, S_kv] broadcastable, True = attend."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, 1)
    v = v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, -1) @ v


def opset23_forward(w, ids, attn_mask):
    """make_opset23.py's graph in torch ops: w maps initializer names to tensors."""
    HEADS, KV, HD = 4, 2, 16
    b, s = ids.shape
    pos = torch.arange(s)
    cos, sin = w["cos_cache"][pos], w["sin_cache"][pos]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    pad = attn_mask.bool()[:, None, None, :]
    h = w["wte"][ids]
    for i in range(2):
        p = "l%d." % i
        n = _rms(h, w[p + "ln1"])

        def heads(x, nh):
            return x.reshape(b, s, nh, HD).transpose(1, 2)
        q = _rope(heads(n @ w[p + "wq"], HEADS), cos, sin)
        k = _rope(heads(n @ w[p + "wk"], KV), cos, sin)
        v = heads(n @ w[p + "wv"], KV)
        if i == 0:  # is_causal=1, default scale
            a = _attention(q, k, v, HD ** -0.5, causal)
        else:  # scale 0.3, mask = causal and padding
            a = _attention(q, k, v, 0.3, causal & pad)
        a = a.transpose(1, 2).reshape(b, s, HEADS * HD)
        h = h + a @ w[p + "wo"]
        n = _rms(h, w[p + "ln2"])
        g = n @ w[p + "wg"]
        h = h + ((g * torch.sigmoid(g)) * (n @ w[p + "wu"])) @ w[p + "wd"]
    return _rms(h, w["ln_f"]) @ w["lm_head"]


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def opset23():
    name = "opset23_tiny"
    m = onnx.load(os.path.join(HERE, name, "model.onnx"))
    consts = ("cos_cache", "sin_cache")
    w = {}
    for i in m.graph.initializer:
        if i.data_type == onnx.TensorProto.FLOAT:
            w[i.name] = torch.tensor(numpy_helper.to_array(i).astype(np.float64),
                                     requires_grad=i.name not in consts)
    d = os.path.join(HERE, name, "test_data_set_0")
    ids, mask = read_pb(os.path.join(d, "input_0.pb")), read_pb(os.path.join(d, "input_1.pb"))
    assert ids.dtype == np.int64 and ids.shape == (1, 7) and mask.shape == (1, 7)
    out = os.path.join(HERE, "grad_ref", name)
    os.makedirs(out, exist_ok=True)
    ids.astype("<i8").tofile(os.path.join(out, "input_0.bin"))
    mask.astype("<i8").tofile(os.path.join(out, "input_1.bin"))
    y = opset23_forward(w, torch.from_numpy(ids.copy()), torch.from_numpy(mask.copy()))
    want = read_pb(os.path.join(d, "output_0.pb"))
    err = np.max(np.abs(y.detach().numpy() - want))
    assert err < 1e-5 * np.max(np.abs(want)), "%s: not the committed model (%g)" % (name, err)
    loss = (y * y).sum()
    loss.backward()
    np.array([loss.item()], dtype="<f8").tofile(os.path.join(out, "loss.bin"))
    params = [k for k in w if k not in consts]
    for k in params:
        w[k].grad.numpy().astype("<f4").tofile(os.path.join(out, k + ".bin"))
    with open(os.path.join(out, "map.txt"), "w") as f:
        for k in params:
            f.write("%s %s 0\n" % (k, k))
    print("%s: loss %.6g, %d parameters (logits off the committed ones by %.2g)" %
          (name, loss.item(), len(params), err))


def main():
    only = sys.argv[1:]
    if not only or "opset23_tiny" in only:
        opset23()
    if only and not any(n in only for n, _, _ in MODELS):
        return
    built = built_models()
    for name, _, _ in MODELS:
        if only and name not in only:
            continue
        m = onnx.load(os.path.join(HERE, name, "model.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
                 if i.data_type == onnx.TensorProto.FLOAT}
        model = built[name].double().eval()
        params = dict(model.named_parameters())
        # which initializer holds which parameter: equal values, or equal to its transpose
        mapping = []
        for iname, a in inits.items():
            for pname, p in params.items():
                v = p.detach().numpy().astype(np.float32)
                if a.shape == v.shape and np.array_equal(a, v):
                    mapping.append((iname, pname, 0))
                elif a.ndim == 2 and a.shape == v.shape[::-1] and np.array_equal(a.T, v):
                    mapping.append((iname, pname, 1))
        mapped = {p for _, p, _ in mapping}
        missing = [p for p in params if p not in mapped]
        assert not missing, "%s: parameters without an initializer: %s" % (name, missing)
        assert len({i for i, _, _ in mapping}) == len(mapping), "ambiguous initializer"
        out = os.path.join(HERE, "grad_ref", name)
        os.makedirs(out, exist_ok=True)
        d = os.path.join(HERE, name, "test_data_set_0")
        n_in = len(m.graph.input)
        xs = []
        for j in range(n_in):
            t = onnx.TensorProto()
            with open(os.path.join(d, "input_%d.pb" % j), "rb") as f:
                t.ParseFromString(f.read())
            a = numpy_helper.to_array(t)
            assert a.dtype == np.int64 and a.shape == (1, 7)
            a.astype("<i8").tofile(os.path.join(out, "input_%d.bin" % j))
            xs.append(torch.from_numpy(a.copy()))
        y = model(*xs)
        y = y[0] if isinstance(y, tuple) else y
        t = onnx.TensorProto()
        with open(os.path.join(d, "output_0.pb"), "rb") as f:
            t.ParseFromString(f.read())
        want = numpy_helper.to_array(t)
        err = np.max(np.abs(y.detach().numpy() - want))
        assert err < 1e-4 * np.max(np.abs(want)), "%s: not the committed model (%g)" % (name, err)
        loss = (y * y).sum()
        loss.backward()
        np.array([loss.item()], dtype="<f8").tofile(os.path.join(out, "loss.bin"))
        for pname, p in params.items():
            g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)  # unused: zeros
            g.astype("<f4").tofile(os.path.join(out, pname + ".bin"))
        with open(os.path.join(out, "map.txt"), "w") as f:
            for i, p, t in mapping:
                f.write("%s %s %d\n" % (i, p, t))
        print("%s: loss %.6g, %d parameters, %d initializers mapped" %
              (name, loss.item(), len(params), len(mapping)))


if __name__ == "__main__":
    main()
