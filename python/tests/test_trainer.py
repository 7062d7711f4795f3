"""python/tests/test_trainer.py - kernc.Trainer: the first loss of a linear classifier equals
numpy's cross-entropy, its SGD update is numpy's, steps lower the loss, checkpoints save and
load, a named loss output and errors."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import kernc


def linear_model(tmp_path, w, with_loss=False):
    """logits = x @ W (x f32[N, 4], W [4, 3]); with_loss: also loss = mean(logits^2)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])]
    if with_loss:
        nodes += [helper.make_node("Mul", ["logits", "logits"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq"], ["loss"], keepdims=0)]
        outs.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    g = helper.make_graph(nodes, "linear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          outs, [numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "linear.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def xent(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(logp)
    loss = -logp[np.arange(len(labels)), labels].mean()
    grad = p.copy()
    grad[np.arange(len(labels)), labels] -= 1
    return loss, grad / len(labels)


def test_sgd_steps_match_numpy_and_lower_the_loss(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int64)
    path = linear_model(tmp_path, w)
    lr = 0.5
    with kernc.Trainer(path, loss="xent:logits:labels", optimizer="sgd", lr=lr,
                       weight_decay=0.0) as t:
        assert list(t.params()) == ["W"]
        feeds = {"x": x, "labels": y}
        loss0, g = xent(x.astype(np.float64) @ w, y)
        assert t.step(feeds) == pytest.approx(loss0, rel=1e-5)
        assert t.steps == 1
        w1 = w - lr * (x.T @ g)
        np.testing.assert_allclose(t.params()["W"], w1, rtol=1e-5, atol=1e-6)
        assert t.grad_norm == pytest.approx(np.linalg.norm(x.T @ g), rel=1e-5)
        losses = [t.step(feeds) for _ in range(10)]
        assert losses[0] == pytest.approx(xent(x.astype(np.float64) @ w1, y)[0], rel=1e-5)
        assert losses[-1] < losses[0] < loss0
        ck = str(tmp_path / "ck.safetensors")
        t.save(ck)
        trained = t.params()["W"]
        t.step(feeds)
        t.load(ck)
        np.testing.assert_array_equal(t.params()["W"], trained)
        assert t.steps == 11
        with pytest.raises(kernc.KernCError, match="labels"):
            t.step({"x": x})


def test_named_loss_adamw(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    with kernc.Trainer(linear_model(tmp_path, w, with_loss=True), loss="loss", params="W",
                       lr=0.05) as t:
        first = t.step({"x": x})
        assert first == pytest.approx(np.mean((x.astype(np.float64) @ w) ** 2), rel=1e-5)
        for _ in range(20):
            last = t.step({"x": x})
        assert last < 0.5 * first
    with pytest.raises(kernc.KernCError, match="no output 'nope'"):
        kernc.Trainer(linear_model(tmp_path, w), loss="xent:nope:labels")
    with pytest.raises(kernc.KernCError):
        kernc.Trainer(linear_model(tmp_path, w), loss="xent:logits:labels", params="nothing*")


def test_fixed_labels_shape(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int64)
    with kernc.Trainer(linear_model(tmp_path, w), loss="xent:logits:labels", labels_shape=(5,),
                       optimizer="sgd", lr=0.1) as t:
        assert t.step({"x": x, "labels": y}) == pytest.approx(xent(x.astype(np.float64) @ w, y)[0],
                                                             rel=1e-5)
        with pytest.raises(kernc.KernCError, match="labels"):
            t.step({"x": x[:4], "labels": y[:4]})
