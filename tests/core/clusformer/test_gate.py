"""core.clusformer.gate: the rows the model reads. A row the gate skips gets exactly the
calibrated cosine weight the model's cosine skip gives; a row whose decision the model
would flip is never skipped."""

import numpy as np
import torch

from cftools.core.clusformer.gate import (
    GATE_MARGIN,
    Gate,
    cosine_logits,
    measure_gates,
    model_logits,
    recorded_gate,
)
from cftools.core.clusformer.grammar import build_sequences
from cftools.core.clusformer.inference import LinkStats, link_array
from cftools.core.clusformer.model import Clusformer, make_config, unit_rows
from cftools.core.neighbours.index import knn
from cftools.data.demo import make_demo_features

THRESHOLDS = {"infomap": 0.5, "link_mode_infomap": "reciprocal"}


def _setup(head_bias: float | None, seed: int = 0):
    """A small cosine-skip model over demo sequences. ``head_bias``: the transformer's
    correction is that constant everywhere (head weights zero); None: a random head."""
    torch.manual_seed(seed)
    f, y = make_demo_features(500, 16, seed=seed)
    idx, sim = knn(f, 10)
    order, mask, _ = build_sequences(idx, sim, 10, labels=y)
    config = make_config("small", 16, 10, width=16, heads=2, encoder_layers=1,
                         decoder_layers=1, ffn=32)
    model = Clusformer(config).eval()
    cos = (f[order] * f[order][:, :1]).sum(-1)[:, 1:][mask[:, 1:]]
    with torch.no_grad():  # calibrated cosine crosses 0.5 at the median neighbour cosine
        model.skip.copy_(torch.tensor([20.0, -20.0 * float(np.median(cos))]))
        if head_bias is not None:
            model.head.weight.zero_()
            model.head.bias.fill_(head_bias)
        else:
            model.head.weight.normal_(0, 0.5)
    ft = torch.from_numpy(f)
    return model, ft, order, mask


def _links(model, ft, order, mask, gate=None, stats=None):
    return link_array(order, mask, model.prepare(ft), model=model, unit=unit_rows(ft),
                      batch_size=64, gate=gate, stats=stats)


def test_skipped_rows_get_exactly_the_calibrated_cosine_weight():
    # a model whose correction is zero IS calibrated cosine: gated links equal its own
    model, ft, order, mask = _setup(head_bias=0.0)
    full = _links(model, ft, order, mask)
    gate = Gate("infomap", "reciprocal", 0.5, reach=1.0, flip_distance=0.5)
    stats = LinkStats()
    gated = _links(model, ft, order, mask, gate, stats)
    assert 0 < stats.model_rows < stats.rows == order.shape[0]  # some rows skipped, some read
    np.testing.assert_array_equal(gated, full)
    # with a correction: skipped rows hold sigmoid(a * cos + b) (masked positions 0), as
    # the model's cosine skip computes it; read rows hold the model's own output
    model, ft, order, mask = _setup(head_bias=None)
    full = _links(model, ft, order, mask)
    stats = LinkStats()
    gated = _links(model, ft, order, mask, gate, stats)
    cos_logit = torch.from_numpy(cosine_logits(model, unit_rows(ft), order))
    calibrated = (torch.sigmoid(cos_logit) * torch.from_numpy(mask)).numpy()
    read = gate.rows_to_read(cos_logit, torch.from_numpy(mask)).numpy()
    assert read.sum() == stats.model_rows and 0 < read.sum() < read.size
    np.testing.assert_array_equal(gated[~read], calibrated[~read])
    # (the model's own output depends on its batch's make-up by rounding only)
    np.testing.assert_allclose(gated[read], full[read], rtol=0, atol=1e-6)


def test_a_row_the_model_would_flip_is_never_skipped():
    """The correction is +0.8 logit everywhere: it flips every link whose calibrated
    cosine lies less than 0.8 below the threshold. The gate measured on these rows reads
    every row holding such a link, and skips rows whose links all lie farther away."""
    model, ft, order, mask = _setup(head_bias=0.8)
    full = _links(model, ft, order, mask)
    cos_logit = cosine_logits(model, unit_rows(ft), order)
    use = mask.copy()
    use[:, 0] = False
    gates = measure_gates(THRESHOLDS, cos_logit, model_logits(full), use, ("infomap",))
    gate = recorded_gate({"gate": gates}, "infomap")
    assert gate is not None and 0.7 < gate.flip_distance <= 0.8 + 1e-5
    assert abs(gate.reach - GATE_MARGIN * gate.flip_distance) < 1e-9
    model_says = full >= 0.5
    cosine_says = 1 / (1 + np.exp(-cos_logit)) >= 0.5
    flipped = ((model_says != cosine_says) & use).any(axis=1)
    read = gate.rows_to_read(torch.from_numpy(cos_logit), torch.from_numpy(mask)).numpy()
    assert flipped.any() and (~read).any()  # the case is not vacuous
    assert read[flipped].all()
    # a constructed row: its one neighbour lies 0.4 logit under the threshold, so the
    # correction flips it; its cosine to the centre is set by hand
    row_cos = torch.tensor([[20.0, -0.4, -9.0, -9.0]])
    row_mask = torch.tensor([[True, True, True, False]])
    assert gate.rows_to_read(row_cos, row_mask).item()
    far = torch.tensor([[20.0, -2.0, -9.0, 3.0]])  # every link farther than the reach
    assert not gate.rows_to_read(far, row_mask).item()


def test_a_model_without_a_gate_reads_every_row():
    assert recorded_gate({}, "infomap") is None
    assert recorded_gate({"gate": {"infomap": {"decoder": "infomap"}}}, "infomap") is None
    bad = {"decoder": "infomap", "mode": "directed", "threshold": 1.5, "reach": 1.0,
           "flip_distance": 0.5}
    assert recorded_gate({"gate": {"infomap": bad}}, "infomap") is None
    model, ft, order, mask = _setup(head_bias=None)
    stats = LinkStats()
    _links(model, ft, order, mask, None, stats)
    assert stats.model_rows == stats.rows == order.shape[0]
