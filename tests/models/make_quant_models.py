#!/usr/bin/env python3
"""tests/models/make_quant_models.py - int8 versions of tests/models/bert_tiny made by ONNX
Runtime's own quantization tools, with ONNX Runtime's outputs on the same inputs as references.

Run with the Python that has onnxruntime (the pyenv one here):

    python3 tests/models/make_quant_models.py [--out DIR]

Models (each NAME/model.onnx with bert_tiny's two data sets' inputs):
  bert_tiny_qdyn  quantize_dynamic, int8 weights per tensor: DynamicQuantizeLinear on the
                  activations, MatMulInteger, Cast and Mul by the scales (what ORT's users get
                  from one call on a float model);
  bert_tiny_qop   quantize_static, QOperator format, int8 activations and weights, calibrated on
                  the two data sets: QuantizeLinear, QLinearMatMul, DequantizeLinear;
  bert_tiny_qdq   quantize_static, QDQ format, per-channel int8 weights: QuantizeLinear /
                  DequantizeLinear pairs around float MatMuls, which a runtime is expected to
                  recognize as int8 matmuls.
Only MatMul is quantized (op_types_to_quantize), so every op is a standard ONNX one (no
com.microsoft contrib ops); the static models leave the attention's own two MatMuls per layer
(q.k^T and p.v, of activations only) in float (nodes_to_exclude), so the int8 models have the
int8 projections and feed-forward layers and a float attention that fuses. References: ONNX Runtime's CPU run of the quantized model, the
oracle the issue names; the script prints how far the int8 results are from the float model's
PyTorch references, for scale.
"""
import argparse
import glob
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "bert_tiny")
NAMES = ("input_ids", "token_type_ids", "attention_mask")


def read_pb(path):
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def data_sets():
    out = []
    for d in sorted(glob.glob(os.path.join(SRC, "test_data_set_*"))):
        feeds = {n: read_pb(os.path.join(d, f"input_{i}.pb")) for i, n in enumerate(NAMES)}
        wants = [read_pb(p) for p in sorted(glob.glob(os.path.join(d, "output_*.pb")))]
        out.append((os.path.basename(d), feeds, wants))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    out = ap.parse_args().out
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    sets = data_sets()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([feeds for _, feeds, _ in sets])

        def get_next(self):
            return next(self.it, None)

    src = os.path.join(SRC, "model.onnx")
    attention_matmuls = [n.name for n in onnx.load(src).graph.node
                         if n.op_type == "MatMul" and "/attention/MatMul" in n.name]
    makers = {
        "bert_tiny_qdyn": lambda dst: quantize_dynamic(src, dst, weight_type=QuantType.QInt8,
                                                       op_types_to_quantize=["MatMul"]),
        "bert_tiny_qop": lambda dst: quantize_static(
            src, dst, Reader(), quant_format=QuantFormat.QOperator, op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=attention_matmuls),
        "bert_tiny_qdq": lambda dst: quantize_static(
            src, dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            nodes_to_exclude=attention_matmuls),
    }
    for name, make in makers.items():
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        path = os.path.join(d, "model.onnx")
        make(path)
        onnx.checker.check_model(path)
        m = onnx.load(path)
        assert all(n.domain in ("", "ai.onnx") for n in m.graph.node), "a contrib op"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for set_name, feeds, wants in sets:
            sd = os.path.join(d, set_name)
            os.makedirs(sd)
            for i, n in enumerate(NAMES):
                shutil.copy(os.path.join(SRC, set_name, f"input_{i}.pb"), sd)
            for i, y in enumerate(sess.run(None, feeds)):
                with open(os.path.join(sd, f"output_{i}.pb"), "wb") as f:
                    f.write(numpy_helper.from_array(y).SerializeToString())
                rel = np.max(np.abs(y - wants[i])) / np.max(np.abs(wants[i]))
                print(f"  {name} {set_name} output {i}: max |int8 - float| = {rel:.3g} of max |float|")
        ops = sorted({n.op_type for n in m.graph.node})
        print(f"{name}: {len(m.graph.node)} nodes, ops {' '.join(ops)}")


if __name__ == "__main__":
    main()
