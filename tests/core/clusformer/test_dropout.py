"""The model's dropout: masks from 16 random bits an element, nn.Dropout's semantics."""

import torch
from torch import nn

from cftools.core.clusformer.dropout import CheapDropout, keep_mask, use_cheap_dropout
from cftools.core.clusformer.model import Clusformer, make_config


def test_keep_mask_keeps_the_asked_share_and_repeats_under_a_seed():
    torch.manual_seed(3)
    a = keep_mask((64, 31, 257), 0.9)  # not a multiple of four elements
    torch.manual_seed(3)
    b = keep_mask((64, 31, 257), 0.9)
    assert a.shape == (64, 31, 257) and a.dtype == torch.bool
    assert torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.9) < 0.003  # 510K draws: sd 0.0004
    # each of the four 16-bit lanes of a draw is kept at the same rate
    lanes = keep_mask((1_600_000,), 0.5).view(-1, 4).float().mean(0)
    assert torch.all((lanes - 0.5).abs() < 0.004), lanes  # 400K each: sd 0.0008
    assert keep_mask((1000,), 1.0).all() and not keep_mask((1000,), 0.0).any()


def test_cheap_dropout_drops_and_scales_as_nn_dropout_does():
    x = torch.randn(200, 300)
    drop = CheapDropout(0.25)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(CheapDropout(0.0)(x), x)


def test_the_model_trains_with_cheap_dropout_and_repeats_under_a_seed():
    """Every plain nn.Dropout of the model is a CheapDropout; two training steps from the
    same seed give the same weights."""
    def trained():
        torch.manual_seed(0)
        model = Clusformer(make_config("small", 16, 8, width=32, ffn=64))
        assert not [m for m in model.modules() if type(m) is nn.Dropout]
        assert any(isinstance(m, CheapDropout) for m in model.modules())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        tokens = torch.nn.functional.normalize(torch.randn(4, 8, 16), dim=-1)
        mask = torch.ones(4, 8, dtype=torch.bool)
        model.train()
        for _ in range(2):
            loss = model(tokens, mask).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(trained(), trained()):
        assert torch.equal(a, b)


def test_use_cheap_dropout_replaces_nested_dropouts():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1)))
    use_cheap_dropout(net)
    found = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [type(m) for m in found] == [CheapDropout, CheapDropout]
    assert [m.p for m in found] == [0.3, 0.1]
