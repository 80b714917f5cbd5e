"""The Clusformer module, its presets, FLOPs count, and HDF5 save/load that never unpickles."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from cftools.core.clusformer.grammar import centre_cosine
from cftools.core.clusformer.model import (
    ENCODINGS,
    Clusformer,
    flops_per_sequence,
    load_model,
    make_config,
    save_model,
    unit_rows,
)
from cftools.errors import CfError


def _batch(b=3, L=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, L, d, generator=g), dim=-1)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[0, 5:] = False
    return x, mask


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_forward_shape_and_masked_tokens_do_not_matter(encoding):
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, encoding=encoding, width=32, ffn=64)).eval()
    x, mask = _batch()
    with torch.no_grad():
        y = model(x, mask)
        x2 = x.clone()
        x2[0, 5:] = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)  # masked slots
        y2 = model(x2, mask)
    assert y.shape == (3, 8) and torch.isfinite(y).all()
    assert torch.allclose(y[0, :5], y2[0, :5], atol=1e-5)
    assert torch.equal(y[1:], y2[1:])


def test_cde_makes_outputs_follow_their_tokens():
    # with the CDE a permutation of the neighbours permutes the (non-centre) outputs' inputs:
    # the model is not blind to the tokens (unlike encoding 'none' with fixed queries)
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64)).eval()
    x, mask = _batch()
    perm = torch.tensor([0, 2, 1, 3, 4, 5, 6, 7])
    with torch.no_grad():
        assert not torch.allclose(model(x, mask), model(x[:, perm], mask[:, perm]))


@pytest.mark.parametrize("overrides", [
    {}, {"encoding": "learned"}, {"encoding": "sinusoidal"}, {"encoding": "none"},
    {"features": True}, {"encoder_layers": 0}, {"decoder_layers": 3, "heads": 8}])
def test_inference_path_equals_forward(overrides):
    """Clusformer.infer (what cf-link and validation run) is forward() written for speed:
    same logits on masked batches, whatever the config; close under bf16 weights too."""
    from cftools.core.clusformer.inference import cast_for_inference

    torch.manual_seed(1)
    config = make_config("small", 24, 12, width=32, heads=overrides.pop("heads", 4), ffn=48,
                         **overrides)
    model = Clusformer(config).eval()
    model.feature_mean.copy_(torch.randn(24) * 0.2)
    feats = torch.randn(300, 24)
    order = torch.randint(0, 300, (20, 12))
    order[:, 0] = torch.arange(20)
    mask = torch.rand(20, 12) > 0.3
    mask[:, 0] = True
    full = torch.ones_like(mask)  # no masked key at all: infer() skips the mask
    fast = cast_for_inference(model, torch.bfloat16)
    # a cosine-skip model also needs the raw cosine of every position to its centre
    cosine = centre_cosine(unit_rows(feats)[order]) if model.needs_cosine else None
    with torch.no_grad():
        for m in (mask, full):
            want = model(feats[order], m)
            got = model.infer(model.prepare(feats), order, m, cosine)
            assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
            got16 = fast.infer(fast.prepare(feats, dtype=torch.bfloat16), order, m, cosine).float()
            assert torch.allclose(got16, want, atol=0.1), (got16 - want).abs().max()
    inplace = feats.clone()
    assert torch.equal(model.prepare(inplace, inplace=True, block_rows=7), model.prepare(feats))
    assert torch.equal(inplace, model.prepare(feats))


def _modules_forward(model, tokens, mask):
    """What forward() computes, by nn.TransformerEncoder/Decoder's own forward."""
    pad = ~mask
    h = model.embed(tokens, mask)
    memory = model.encoder(h, src_key_padding_mask=pad) if model.encoder is not None else h
    q = model.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(memory.dtype)
    logits = model.head(model.decoder(q, memory, memory_key_padding_mask=pad)).squeeze(-1)
    if model.needs_cosine:
        logits = logits + model.cosine_logit(centre_cosine(unit_rows(tokens.reshape(
            -1, tokens.shape[-1])).reshape(tokens.shape)))
    return logits


@pytest.mark.parametrize("overrides", [{}, {"encoder_layers": 0}, {"features": True}])
def test_forward_is_the_transformer_layers_written_out(overrides):
    """forward() runs the layers of nn.TransformerEncoder/Decoder on their own weights,
    written out: the same logits as their forward, in eval mode and in training mode with
    dropout at 0, with and without masked keys."""
    torch.manual_seed(2)
    model = Clusformer(make_config("small", 16, 9, width=32, ffn=48, **overrides))
    model.feature_mean.copy_(torch.randn(16) * 0.2)
    tokens = torch.nn.functional.normalize(torch.randn(6, 9, 16), dim=-1)
    mask = torch.ones(6, 9, dtype=torch.bool)
    mask[:2, 5:] = False
    for train in (False, True):
        if train:
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
                if isinstance(m, torch.nn.MultiheadAttention):
                    m.dropout = 0.0
        model.train(train)
        with torch.no_grad():
            for m in (mask, torch.ones_like(mask)):
                got, want = model(tokens, m), _modules_forward(model, tokens, m)
                assert torch.allclose(got[m], want[m], atol=1e-5), (got - want).abs().max()


def test_training_drops_attention_weights_and_eval_does_not():
    """In training the attention weights are dropped (nn.MultiheadAttention's dropout):
    with every other dropout at 0, two draws differ; in eval mode forward repeats."""
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 9, width=32, ffn=48))
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    tokens = torch.nn.functional.normalize(torch.randn(4, 9, 16), dim=-1)
    mask = torch.ones(4, 9, dtype=torch.bool)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(tokens, mask), model(tokens, mask))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the bmm attention of bf16
            assert not torch.equal(model(tokens, mask), model(tokens, mask))
        model.eval()
        assert torch.equal(model(tokens, mask), model(tokens, mask))


@pytest.mark.parametrize("bf16", [False, True])
def test_the_shared_first_query_attention_is_the_per_sequence_one_with_its_masks(
        monkeypatch, bf16):
    """Training computes the decoder's first self-attention (over the learned queries, the
    same for every sequence) once, and draws its weights' dropout per sequence: the same
    logits and gradients, dropout masks included, as that attention run on the queries
    repeated for each sequence."""
    import cftools.core.clusformer.model as model_module
    from cftools.core.clusformer.layers import attention

    def per_sequence(attn, x, batch, dropout=0.0):
        return attention(attn, x.expand(batch, -1, -1), None, None, dropout)

    torch.manual_seed(4)
    model = Clusformer(make_config("small", 16, 9, width=32, ffn=48, dropout=0.3))
    tokens, mask = _batch(b=5, L=9)
    model.train()

    def run():
        torch.manual_seed(11)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(tokens, mask)
        logits[mask].float().square().sum().backward()
        return logits.detach().float(), model.queries.grad.clone()

    shared = run()
    monkeypatch.setattr(model_module, "shared_self_attention", per_sequence)
    plain = run()
    if bf16:  # both round in bfloat16, each a few percent from float32's gradient
        assert torch.allclose(shared[0][mask], plain[0][mask], atol=0.05)
        assert ((shared[1] - plain[1]).norm() / plain[1].norm()).item() < 0.1
    else:
        assert torch.allclose(shared[0][mask], plain[0][mask], atol=1e-5)
        assert torch.allclose(shared[1], plain[1], atol=1e-5, rtol=1e-4)


def test_training_attention_on_cpu_drops_weights_with_the_cheap_masks():
    """On the CPU, attention with its weights' dropout (training) runs as two batched
    matmuls with dropout.py's masks in float32 as in bfloat16 (scaled_dot_product_attention
    would fall back to its math path and draw one random number a weight); without
    dropout it is scaled_dot_product_attention, and the two agree."""
    from cftools.core.clusformer.layers import attention, attention_bmm

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(32, 4, dropout=0.2, batch_first=True)
    x = torch.randn(6, 9, 32)
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias) \
        .view(6, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
    torch.manual_seed(5)
    got = attention(attn, x, None, None, 0.2)
    torch.manual_seed(5)
    out = attention_bmm(q, k, v, None, 0.2).transpose(1, 2).reshape(6, 9, 32)
    want = torch.nn.functional.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    assert torch.allclose(got, want, atol=1e-6)
    plain = attention_bmm(q, k, v, None).transpose(1, 2).reshape(6, 9, 32)
    assert torch.allclose(attention(attn, x, None, None),
                          torch.nn.functional.linear(plain, attn.out_proj.weight,
                                                     attn.out_proj.bias), atol=1e-5)


def test_presets_and_flops():
    small, paper = make_config("small", 256, 64), make_config("paper", 256, 64)
    assert (paper.encoder_layers, paper.decoder_layers, paper.heads, paper.width) == (6, 6, 8, 512)
    assert small.encoder_layers + small.decoder_layers < 12
    f_small, f_paper = flops_per_sequence(small), flops_per_sequence(paper)
    assert 0 < f_small < f_paper
    # counted FLOPs agree with the parameter count: ~2 FLOPs per weight per token, plus attention
    n_weights = sum(p.numel() for n, p in Clusformer(paper).named_parameters()
                    if p.dim() == 2 and n not in ("queries",))
    assert 0.8 < f_paper / (2 * 64 * n_weights) < 1.5
    with pytest.raises(CfError):
        make_config("small", 16, 8, width=30, heads=4)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64)).eval()
    model.feature_mean.fill_(0.01)
    save_model(tmp_path / "m.h5", model, thresholds={"link": 0.4}, training={"epochs": 1})
    loaded, info = load_model(tmp_path / "m.h5")
    assert info["thresholds"] == {"link": 0.4}
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    x, mask = _batch()
    with torch.no_grad():
        assert torch.equal(model(x, mask), loaded(x, mask))
    with h5py.File(tmp_path / "m.h5") as f:
        assert all(f["weights"][k].dtype == np.float32 for k in f["weights"])


@pytest.fixture()
def saved(tmp_path):
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64))
    save_model(tmp_path / "m.h5", model)
    return tmp_path / "m.h5"


def _refused(path, *words):
    with pytest.raises(CfError) as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    for w in words:
        assert w in text
    return text


class Boom:
    def __reduce__(self):
        return (exec, ("open('/tmp/cftools-pwned', 'w').write('x')",))


def test_refuses_a_pickle(tmp_path, saved):
    # a whole file that is a pickle (torch.save-style), and a pickle hidden in the weights
    bad = tmp_path / "pickled.h5"
    bad.write_bytes(pickle.dumps({"weights": Boom()}))
    _refused(bad, "not an HDF5 file")
    torch.save({"x": torch.zeros(2)}, tmp_path / "torch.h5")
    _refused(tmp_path / "torch.h5", "not an HDF5 file")
    with h5py.File(saved, "a") as f:
        name = "head.weight"
        del f["weights"][name]
        f["weights"].create_dataset(name, data=np.void(pickle.dumps(Boom())))
    _refused(saved, "head.weight")


def test_refuses_pickled_bytes_as_uint8(saved):
    with h5py.File(saved, "a") as f:
        del f["weights"]["head.bias"]
        f["weights"]["head.bias"] = np.frombuffer(pickle.dumps(Boom()), dtype=np.uint8)
    _refused(saved, "head.bias", "dtype")


def test_refuses_truncated_file(tmp_path, saved):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        t = tmp_path / f"trunc{cut}.h5"
        t.write_bytes(data[:cut])
        _refused(t)


def test_refuses_missing_unexpected_and_misshapen(saved, tmp_path):
    import shutil

    a, b, c = (tmp_path / n for n in ("a.h5", "b.h5", "c.h5"))
    for p in (a, b, c):
        shutil.copy(saved, p)
    with h5py.File(a, "a") as f:
        del f["weights"]["queries"]
    _refused(a, "lack", "queries")
    with h5py.File(b, "a") as f:
        f["weights"]["extra"] = np.zeros(3, np.float32)
    _refused(b, "unexpected", "extra")
    with h5py.File(c, "a") as f:
        del f["weights"]["queries"]
        f["weights"]["queries"] = np.zeros((3, 3), np.float32)
    _refused(c, "shape")


def test_refuses_bad_config(saved):
    with h5py.File(saved, "a") as f:
        f.attrs["config"] = '{"dim": 16, "seq_len": 8, "evil": 1}'
    _refused(saved, "unknown keys")


def test_no_code_ran():
    import os

    assert not os.path.exists("/tmp/cftools-pwned")


def test_bf16_inference_is_close_to_float32():
    from cftools.core.clusformer.inference import cast_for_inference

    torch.manual_seed(0)
    model = Clusformer(make_config("small", 16, 8, width=32, ffn=64)).eval()
    model.feature_mean.fill_(0.05)
    fast = cast_for_inference(model, torch.bfloat16)
    assert fast.feature_mean.dtype == torch.float32 and fast.head.weight.dtype == torch.bfloat16
    x, mask = _batch()
    with torch.no_grad():
        p32 = torch.sigmoid(model(x, mask))
        p16 = torch.sigmoid(fast(x, mask).float())
    assert (p32 - p16).abs().max() < 0.05
    assert model.head.weight.dtype == torch.float32  # the original is left alone
