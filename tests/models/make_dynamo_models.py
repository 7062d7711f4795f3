#!/usr/bin/env python3
"""tests/models/make_dynamo_models.py - bert_tiny rewritten in the op patterns of PyTorch 2's
dynamo ONNX exporter (torch.onnx.export(..., dynamo=True) with transformers' SDPA attention),
which that exporter is not at hand here to produce (Debian has torch 1.13).

Run with the Python that has onnx >= 1.16 and onnxruntime (the pyenv one here):

    python3 tests/models/make_dynamo_models.py [--out DIR]

It writes tests/models/bert_dynamo_tiny/model.onnx and copies bert_tiny's two data sets (inputs,
and the reference outputs from PyTorch in float64: the math is the same model's, see below).

What is in the dynamo exporter's form (opset 18), layer for layer the weights of
tests/models/bert_tiny:
  - the padding mask as transformers' masking_utils builds it for SDPA and torch.export traces
    it: batch and key positions from Range, the bool mask indexed at [batch, key] by GatherND
    (padding_mask[batch_idx, kv_idx]), a bidirectional term q_idx >= 0 (GreaterOrEqual) and the
    two combined with And into a [B, 1, S, S] bool mask;
  - scaled_dot_product_attention as the exporter decomposes it for a bool mask: the mask turned
    into 0 / -inf with Where, q and k^T each multiplied by sqrt(scale), MatMul, Add, Softmax,
    and the softmax guarded against rows with every key masked by Where(IsNaN(p), 0, p);
  - LayerNormalization, MatMul + Add, heads split and merged by Reshape / Transpose with the
    batch and sequence read through Shape, and position ids from Range; GELU stays the Erf
    formula bert_tiny has (opset 18 has no Gelu op).
Reference outputs: bert_tiny's own (PyTorch, float64). The two graphs compute the same function:
a key masked out gets exp(-inf) = 0 here and exp(-10000 - max) there, which is 0 in float64 as
well, no row is fully padded in the data sets, and sqrt(scale)^2 differs from scale only in
float rounding. The script asserts that ONNX Runtime's float32 run of the new graph is within a
quarter of kernc check's tolerance of those references, as make_models.py does for PyTorch.
"""
import argparse
import glob
import math
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "bert_tiny")


class Builder:
    """Nodes and initializers with generated, readable names."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], {}

    def name(self, base):
        n = self.count.get(base, 0)
        self.count[base] = n + 1
        return f"{base}_{n}" if n else base

    def op(self, op_type, inputs, scope, nout=1, **attrs):
        base = f"/{scope}/{op_type}" if scope else f"/{op_type}"
        node_name = self.name(base)
        outs = [f"{node_name}_output_{i}" for i in range(nout)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0] if nout == 1 else outs

    def const(self, value, scope, dtype=None):
        arr = np.array(value, dtype=dtype)
        n = self.name(f"/{scope}/val" if scope else "/val")
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def weight(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr, name))
        return name


def load_weights():
    m = onnx.load(os.path.join(SRC, "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    consts = {}
    for n in m.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    by_out = {n.output[0]: n for n in m.graph.node}

    def matmul_weight(prefix):
        return inits[by_out[f"{prefix}/MatMul_output_0"].input[1]]

    heads = int(consts["/layers.0/attention/Constant_2_output_0"].reshape(-1)[0])
    head_dim = int(consts["/layers.0/attention/Constant_3_output_0"].reshape(-1)[0])
    layers = sorted({int(k.split(".")[1]) for k in inits if k.startswith("layers.")})
    return m, inits, matmul_weight, heads, head_dim, layers


def build():
    src, w, matmul_weight, heads, head_dim, layers = load_weights()
    eps = next(
        helper.get_attribute_value(a)
        for n in src.graph.node
        if n.op_type == "LayerNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    )
    b = Builder()
    i64 = np.int64
    # sizes through Shape, as the exporter reads symbolic dims
    shape = b.op("Shape", ["input_ids"], "")
    batch = b.op("Gather", [shape, b.const(0, "", i64)], "", axis=0)
    seq = b.op("Gather", [shape, b.const(1, "", i64)], "", axis=0)
    # embeddings
    emb = "embeddings"
    pos = b.op("Range", [b.const(0, emb, i64), seq, b.const(1, emb, i64)], emb)
    we = b.op("Gather", [b.weight("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), "input_ids"], emb)
    te = b.op("Gather", [b.weight("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"], emb)
    pe = b.op("Gather", [b.weight("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), pos], emb)
    x = b.op("Add", [b.op("Add", [we, te], emb), pe], emb)
    x = b.op("LayerNormalization", [x, b.weight("embeddings.LayerNorm.weight", w["embeddings.LayerNorm.weight"]),
                                    b.weight("embeddings.LayerNorm.bias", w["embeddings.LayerNorm.bias"])], emb, axis=-1, epsilon=eps)
    # the mask: padding_mask[batch_idx, kv_idx] & (q_idx >= 0), [B, 1, S, S] bool
    mk = "mask"
    am = b.op("Cast", ["attention_mask"], mk, to=TensorProto.BOOL)
    zero, one = b.const(0, mk, i64), b.const(1, mk, i64)
    bidx = b.op("Range", [zero, batch, one], mk)
    kidx = b.op("Range", [zero, seq, one], mk)
    qidx = b.op("Range", [zero, seq, one], mk)
    grid = b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0], mk, i64)], mk), one_d(b, mk, 1), one_d(b, mk, 1),
                           b.op("Unsqueeze", [seq, b.const([0], mk, i64)], mk)], mk, axis=0)
    bgrid = b.op("Expand", [b.op("Reshape", [bidx, b.const([-1, 1, 1, 1], mk, i64)], mk), grid], mk)
    kgrid = b.op("Expand", [b.op("Reshape", [kidx, b.const([1, 1, 1, -1], mk, i64)], mk), grid], mk)
    index = b.op("Concat", [b.op("Unsqueeze", [bgrid, b.const([-1], mk, i64)], mk),
                            b.op("Unsqueeze", [kgrid, b.const([-1], mk, i64)], mk)], mk, axis=-1)
    padding = b.op("GatherND", [am, index], mk)  # [B, 1, 1, S]
    bidir = b.op("GreaterOrEqual", [b.op("Reshape", [qidx, b.const([1, 1, -1, 1], mk, i64)], mk), b.const(0, mk, i64)], mk)
    mask = b.op("And", [padding, bidir], mk)  # [B, 1, S, S]
    sqrt_scale = b.const(math.sqrt(1.0 / math.sqrt(head_dim)), "sdpa", np.float32)
    f0, finf = b.const(0.0, "sdpa", np.float32), b.const(-np.inf, "sdpa", np.float32)
    heads_shape = b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0], "", i64)], ""),
                                  b.op("Unsqueeze", [seq, b.const([0], "", i64)], ""),
                                  b.const([heads, head_dim], "", i64)], "", axis=0)
    merged_shape = b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0], "", i64)], ""),
                                   b.op("Unsqueeze", [seq, b.const([0], "", i64)], ""),
                                   b.const([heads * head_dim], "", i64)], "", axis=0)
    for layer in layers:
        L = f"layers.{layer}"

        def linear(inp, name, scope):  # name as in the source's node paths, "attention/query"
            dotted = f"{L}.{name.replace('/', '.')}"
            y = b.op("MatMul", [inp, b.weight(f"{dotted}.weight_t", matmul_weight(f"/{L}/{name}"))], scope)
            return b.op("Add", [y, b.weight(f"{dotted}.bias", w[f"{dotted}.bias"])], scope)

        sc = f"{L}/attention"
        q = b.op("Transpose", [b.op("Reshape", [linear(x, "attention/query", sc), heads_shape], sc)], sc, perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [linear(x, "attention/key", sc), heads_shape], sc)], sc, perm=[0, 2, 1, 3])
        v = b.op("Transpose", [b.op("Reshape", [linear(x, "attention/value", sc), heads_shape], sc)], sc, perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [k], sc, perm=[0, 1, 3, 2])
        scores = b.op("MatMul", [b.op("Mul", [q, sqrt_scale], sc), b.op("Mul", [kt, sqrt_scale], sc)], sc)
        bias = b.op("Where", [mask, f0, finf], sc)
        p = b.op("Softmax", [b.op("Add", [scores, bias], sc)], sc, axis=-1)
        p = b.op("Where", [b.op("IsNaN", [p], sc), f0, p], sc)
        ctx = b.op("MatMul", [p, v], sc)
        ctx = b.op("Reshape", [b.op("Transpose", [ctx], sc, perm=[0, 2, 1, 3]), merged_shape], sc)
        h = b.op("Add", [linear(ctx, "attn_out", f"{L}/attn_out"), x], L)
        x = b.op("LayerNormalization", [h, b.weight(f"{L}.attn_ln.weight", w[f"{L}.attn_ln.weight"]),
                                        b.weight(f"{L}.attn_ln.bias", w[f"{L}.attn_ln.bias"])], L, axis=-1, epsilon=eps)
        a = linear(x, "intermediate", f"{L}/intermediate")
        # erf GELU: 0.5 * a * (1 + erf(a / sqrt(2)))
        g = b.op("Erf", [b.op("Div", [a, b.const(math.sqrt(2.0), f"{L}/act", np.float32)], f"{L}/act")], f"{L}/act")
        g = b.op("Mul", [b.op("Mul", [a, b.op("Add", [g, b.const(1.0, f"{L}/act", np.float32)], f"{L}/act")], f"{L}/act"),
                         b.const(0.5, f"{L}/act", np.float32)], f"{L}/act")
        h = b.op("Add", [linear(g, "output", f"{L}/output"), x], L)
        x = b.op("LayerNormalization", [h, b.weight(f"{L}.out_ln.weight", w[f"{L}.out_ln.weight"]),
                                        b.weight(f"{L}.out_ln.bias", w[f"{L}.out_ln.bias"])], L, axis=-1, epsilon=eps)
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="/last_hidden_state"))
    first = b.op("Gather", [x, b.const(0, "pooler", i64)], "pooler", axis=1)
    pooled = b.op("Add", [b.op("MatMul", [first, b.weight("pooler.weight_t", pooler_weight(src, w))], "pooler"),
                          b.weight("pooler.bias", pooler_bias(src, w))], "pooler")
    b.nodes.append(helper.make_node("Tanh", [pooled], ["pooler_output"], name="/pooler/Tanh"))
    dims = ["batch", "seq"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in ("input_ids", "token_type_ids", "attention_mask")]
    hidden = int(w["embeddings.LayerNorm.weight"].shape[0])
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]),
               helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", hidden])]
    graph = helper.make_graph(b.nodes, "bert_dynamo_tiny", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="make_dynamo_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def one_d(b, scope, v):
    return b.const([v], scope, np.int64)


def pooler_node(src):
    return next(n for n in src.graph.node if n.op_type in ("Gemm", "MatMul") and "pooler" in n.output[0])


def pooler_weight(src, w):
    n = pooler_node(src)
    arr = w[n.input[1]]
    if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
        arr = arr.T
    return np.ascontiguousarray(arr)


def pooler_bias(src, w):
    n = pooler_node(src)
    if n.op_type == "Gemm":
        return w[n.input[2]]
    add = next(a for a in src.graph.node if a.op_type == "Add" and n.output[0] in a.input)
    return w[next(i for i in add.input if i in w)]


def read_pb(path):
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    model = build()
    dst = os.path.join(args.out, "bert_dynamo_tiny")
    os.makedirs(dst, exist_ok=True)
    onnx.save(model, os.path.join(dst, "model.onnx"))
    import onnxruntime as ort

    sess = ort.InferenceSession(os.path.join(dst, "model.onnx"), providers=["CPUExecutionProvider"])
    for d in sorted(glob.glob(os.path.join(SRC, "test_data_set_*"))):
        out_dir = os.path.join(dst, os.path.basename(d))
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(d, out_dir)
        feeds = {n: read_pb(os.path.join(d, f"input_{i}.pb")) for i, n in enumerate(("input_ids", "token_type_ids", "attention_mask"))}
        got = sess.run(None, feeds)
        for i, g in enumerate(got):
            want = read_pb(os.path.join(d, f"output_{i}.pb"))
            excess = np.max(np.abs(g - want) / (1e-7 + 1e-3 * np.abs(want)))
            print(f"{os.path.basename(d)} output {i}: ONNX Runtime float32 at {excess:.3f} of kernc check's tolerance")
            assert excess < 0.25, "ONNX Runtime's result is too far from the references"


if __name__ == "__main__":
    main()
