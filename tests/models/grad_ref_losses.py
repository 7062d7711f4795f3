#!/usr/bin/python3
"""tests/models/grad_ref_losses.py - PyTorch references for `kernc grad` (tests/test_grad_cli.c):
the parameter gradients of a training loss on the imported test models.

  - gpt2_tiny, llama_tiny: F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1)) (mean over
    labels not -100) with fixed labels, two of them -100;
  - bert_tiny: F.mse_loss(last_hidden_state, target) (mean), a fixed random target;
  - llama_tiny: logits.sum() (the test differentiates only a few parameters, with --params).

The modules are grad_ref_models.py's (make_models.py's seeds, float64), on test_data_set_0's
inputs. Written to grad_ref/<model>_<loss>/: the inputs as <ONNX input name>.npy, labels.npy or
target.npy, loss.npy (float64) and <PARAM>.npy per PyTorch parameter (float64 gradient rounded
to float32). Which ONNX initializers hold a parameter (transposed or tied) is
grad_ref/<model>/map.txt, written by grad_ref_models.py; test_grad_cli.c sums the initializers'
gradients per parameter as test_grad.c does.

Also two small ONNX models with the training losses as ONNX ops, written to grad_ref/onnx_losses/:
sce.onnx (scores = Transpose(X @ W) [N, C, D], SoftmaxCrossEntropyLoss with class weights,
ignore_index -1, reduction mean) and nll.onnx (NegativeLogLikelihoodLoss of LogSoftmax(X @ W)
[N, C], class weights, ignore_index 2 (a real class), reduction sum); W is the one initializer.
Their references: <model>_loss.npy and <model>_W.npy from F.cross_entropy / F.nll_loss in f64.

Run with Debian's Python (torch 1.13, onnx 1.12): /usr/bin/python3 tests/models/grad_ref_losses.py
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from grad_ref_models import built_models  # noqa: E402

CASES = [("gpt2_tiny", "xent"), ("llama_tiny", "xent"), ("bert_tiny", "mse"), ("llama_tiny", "sum")]


def main():
    built = built_models()
    for name, loss_kind in CASES:
        m = onnx.load(os.path.join(HERE, name, "model.onnx"))
        model = built[name].double().eval()
        model.zero_grad(set_to_none=True)
        out = os.path.join(HERE, "grad_ref", "%s_%s" % (name, loss_kind))
        os.makedirs(out, exist_ok=True)
        d = os.path.join(HERE, name, "test_data_set_0")
        xs = []
        for j, inp in enumerate(m.graph.input):
            t = onnx.TensorProto()
            with open(os.path.join(d, "input_%d.pb" % j), "rb") as f:
                t.ParseFromString(f.read())
            a = numpy_helper.to_array(t)
            np.save(os.path.join(out, inp.name + ".npy"), a)
            xs.append(torch.from_numpy(a.copy()))
        y = model(*xs)
        y = y[0] if isinstance(y, tuple) else y
        gen = np.random.RandomState(13)
        if loss_kind == "xent":
            c = y.shape[-1]
            labels = gen.randint(0, c, size=y.shape[:-1]).astype(np.int64)
            labels.reshape(-1)[[1, 4]] = -100
            np.save(os.path.join(out, "labels.npy"), labels)
            loss = F.cross_entropy(y.reshape(-1, c), torch.from_numpy(labels).reshape(-1),
                                   ignore_index=-100)
        elif loss_kind == "sum":
            loss = y.sum()
        else:
            target = gen.standard_normal(y.shape).astype(np.float32)
            np.save(os.path.join(out, "target.npy"), target)
            loss = F.mse_loss(y, torch.from_numpy(target).double())
        loss.backward()
        np.save(os.path.join(out, "loss.npy"), np.array(loss.item(), dtype=np.float64))
        for pname, p in model.named_parameters():
            if loss_kind == "sum" and not (pname.startswith("layers.1.") and "norm" in pname
                                           or pname == "norm.weight"):
                continue  # the test's --params selects these
            g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
            np.save(os.path.join(out, pname + ".npy"), g.astype(np.float32))
        print("%s %s: loss %.9g" % (name, loss_kind, loss.item()))


def onnx_losses():
    from onnx import TensorProto, helper
    out = os.path.join(HERE, "grad_ref", "onnx_losses")
    os.makedirs(out, exist_ok=True)
    gen = np.random.RandomState(7)
    n, d, f, c = 2, 3, 4, 5
    cw = np.array([0.5, 1.0, 2.0, 1.5, 0.75], dtype=np.float32)
    for name in ("sce", "nll"):
        x = gen.standard_normal((n, d, f) if name == "sce" else (n * d, f)).astype(np.float32)
        w = gen.standard_normal((f, c)).astype(np.float32)
        lab = gen.randint(0, c, size=(n, d) if name == "sce" else (n * d,)).astype(np.int64)
        if name == "sce":
            lab[0, 1] = -1
            lab[1, 2] = -1
        else:
            lab[1] = 2
        cwn = helper.make_node("Constant", [], ["cw"], value=numpy_helper.from_array(cw, "cw"))
        mm = helper.make_node("MatMul", ["X", "W"], ["s"])
        if name == "sce":
            nodes = [cwn, mm, helper.make_node("Transpose", ["s"], ["st"], perm=[0, 2, 1]),
                     helper.make_node("SoftmaxCrossEntropyLoss", ["st", "labels", "cw"], ["loss"],
                                      ignore_index=-1, reduction="mean", name="sce")]
        else:
            nodes = [cwn, mm, helper.make_node("LogSoftmax", ["s"], ["lp"], axis=1),
                     helper.make_node("NegativeLogLikelihoodLoss", ["lp", "labels", "cw"], ["loss"],
                                      ignore_index=2, reduction="sum", name="nll")]
        graph = helper.make_graph(
            nodes, name,
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape),
             helper.make_tensor_value_info("labels", TensorProto.INT64, lab.shape)],
            [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
            [numpy_helper.from_array(w, "W")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(out, name + ".onnx"))
        np.save(os.path.join(out, name + "_X.npy"), x)
        np.save(os.path.join(out, name + "_labels.npy"), lab)
        tw = torch.from_numpy(w).double().requires_grad_()
        s = torch.from_numpy(x).double() @ tw
        tcw = torch.from_numpy(cw).double()
        if name == "sce":
            loss = F.cross_entropy(s.transpose(1, 2), torch.from_numpy(lab), weight=tcw,
                                   ignore_index=-1, reduction="mean")
        else:
            loss = F.nll_loss(F.log_softmax(s, 1), torch.from_numpy(lab), weight=tcw,
                              ignore_index=2, reduction="sum")
        loss.backward()
        np.save(os.path.join(out, name + "_loss.npy"), np.array(loss.item(), dtype=np.float64))
        np.save(os.path.join(out, name + "_W.npy"), tw.grad.numpy().astype(np.float32))
        print("onnx %s: loss %.9g" % (name, loss.item()))


if __name__ == "__main__":
    main()
    onnx_losses()
