"""The training model (ai00ref/train) against the reference engine; skipped without torch (the `[train]` extra).

Tolerances (spec/train.md): the chunked WKV equals the token-by-token recurrence to 1e-9 (float64); the PyTorch
forward of a trained, exported model equals `ai00ref.load_model(..., backend="ref")` on the exported `.st` and
`.pth` to a relative L2 of 1e-5 per token (fp32, the conformance tolerance of the reference engine).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ai00ref import load_model  # noqa: E402
from ai00ref.train.export import compact_arrays, full_tensors, write_pth, write_st  # noqa: E402
from ai00ref.train.init import init_weights  # noqa: E402
from ai00ref.train.model import Rwkv7, Rwkv7Config, full_log_softmax, wkv_chunked, wkv_sequential  # noqa: E402
from ai00ref.train.train import choose_vocab, param_groups, row_map, train_loss  # noqa: E402

REF_TOLERANCE = 1e-5
WKV_TOLERANCE = 1e-9
N_VOCAB = 65536


def random_wkv_inputs(B=2, T=37, H=3, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=torch.float64) for _ in range(3))
    log_w = -0.6065 * torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g, dtype=torch.float64), dim=-1)
    a = torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    state = torch.randn(B, H, N, N, generator=g, dtype=torch.float64)
    return r, log_w, k, v, kk, a, state


@pytest.mark.parametrize("chunk", [16, 5, 1])
def test_chunked_wkv_equals_the_recurrence(chunk):
    inputs = random_wkv_inputs()
    y_seq, s_seq = wkv_sequential(*inputs)
    y_chunk, s_chunk = wkv_chunked(*inputs, chunk=chunk)
    assert torch.allclose(y_chunk, y_seq, rtol=0, atol=WKV_TOLERANCE * y_seq.abs().max())
    assert torch.allclose(s_chunk, s_seq, rtol=0, atol=WKV_TOLERANCE * s_seq.abs().max())


def test_chunked_wkv_gradients_equal_the_recurrence():
    inputs = [z.requires_grad_() for z in random_wkv_inputs(T=20)]
    grads_chunk = torch.autograd.grad(wkv_chunked(*inputs)[0].square().sum(), inputs)
    grads_seq = torch.autograd.grad(wkv_sequential(*inputs)[0].square().sum(), inputs)
    for gc, gs in zip(grads_chunk, grads_seq):
        assert torch.allclose(gc, gs, rtol=0, atol=WKV_TOLERANCE * gs.abs().max())


def tiny_trained_model(steps=6):
    """A 2-layer C=32 model trained a few steps on a random stream over 300 World ids (40 of them trained rows)."""
    rng = np.random.default_rng(0)
    stream = rng.choice(rng.choice(N_VOCAB, 300, replace=False), 4000, p=np.full(300, 1 / 300)).astype(np.int64)
    stream[::7] = stream[3]  # a frequent token
    vocab = choose_vocab(stream, 40)
    model = init_weights(Rwkv7(Rwkv7Config(2, 32, tuple(int(t) for t in vocab), head_size=16)), seed=0)
    opt = torch.optim.AdamW(param_groups(model, 0.1, 3e-3), lr=3e-3)
    rows = torch.from_numpy(row_map(vocab))
    for step in range(steps):
        x = rows[torch.from_numpy(stream[step * 40:step * 40 + 33])].view(1, -1)
        loss, _ = train_loss(model, x[:, :-1], x[:, 1:], len(vocab))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, vocab, stream


def load_rounded(model, compact):
    """Put the exported (fp16-exact) values back into the PyTorch model."""
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in compact.items() if k != "vocab"}
    state["emb.weight"] = torch.cat([state["emb.weight"], torch.zeros(1, model.cfg.n_embd)])
    model.load_state_dict(state)
    return model


def relative_l2(out, ref):
    return float(np.max(np.linalg.norm(out - ref, axis=-1) / np.linalg.norm(ref, axis=-1)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, vocab, stream = tiny_trained_model()
    compact = compact_arrays({k: v.detach().numpy() for k, v in model.state_dict().items()}, vocab)
    tensors = full_tensors(compact)
    folder = tmp_path_factory.mktemp("trained")
    paths = {"st": write_st(tensors, folder / "tiny.st"), "pth": write_pth(tensors, folder / "tiny.pth")}
    return load_rounded(model, compact), vocab, stream, tensors, paths


def test_export_has_official_names_and_zero_rows(exported):
    _, vocab, _, tensors, _ = exported
    untrained = np.setdiff1d(np.arange(N_VOCAB), vocab)
    assert tensors["emb.weight"].shape == tensors["head.weight"].shape == (N_VOCAB, 32)
    assert not tensors["emb.weight"][untrained].any() and not tensors["head.weight"][untrained].any()
    assert tensors["emb.weight"][vocab].any(axis=1).all()
    assert tensors["blocks.0.att.r_k"].shape == (2, 16) and tensors["blocks.1.att.x_r"].shape == (1, 1, 32)
    assert "blocks.0.ln0.weight" in tensors and "blocks.1.ln0.weight" not in tensors


@pytest.mark.parametrize("kind", ["st", "pth"])
def test_pytorch_forward_equals_the_reference_engine(exported, kind):
    model, vocab, stream, _, paths = exported
    prompt = [int(t) for t in stream[100:124]] + [12345 if 12345 not in vocab else 54321]  # ends on an untrained id
    rows = torch.from_numpy(row_map(vocab))
    with torch.no_grad():
        trained = model(rows[torch.tensor(prompt)][None])[0].double().numpy()  # (T, K)
    expected = np.zeros((len(prompt), N_VOCAB))
    expected[:, vocab] = trained
    engine = load_model(paths[kind], backend="ref")
    logits, _ = engine.forward([prompt], engine.new_state(1), full_output=True)
    assert relative_l2(np.asarray(logits[0], np.float64), expected) < REF_TOLERANCE
    assert not np.asarray(logits[0])[:, np.setdiff1d(np.arange(N_VOCAB), vocab)].any()  # untrained rows: logit 0


def test_full_log_softmax_counts_the_zero_rows():
    logits = torch.tensor([[1.0, 2.0, -1.0]])
    logp, logp_zero = full_log_softmax(logits, 10)
    full = torch.cat([logits, torch.zeros(1, 7)], -1).log_softmax(-1)
    assert torch.allclose(logp, full[:, :3]) and torch.allclose(logp_zero, full[:, 3])
