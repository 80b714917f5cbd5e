"""Clusformer: an encoder-decoder transformer that reads a point's kNN sequence and gives,
for every position, the logit that the neighbour there shares the centre's identity.

Token i = the neighbour's feature concatenated with its row of the L x L cosine matrix
(the Cosine Distance Encoding, ``encoding="cde"``), projected to ``width``. The encoder
reads the tokens (masked positions are left out by ``key_padding_mask``); the decoder
reads a learnable L x width query matrix, all positions in parallel (DETR-style), against
the encoder's memory; a linear head gives one logit per position. ``encoding`` selects
the paper's ablation: ``cde``, ``none``, ``learned`` (learned positional embedding) or
``sinusoidal``. With ``features=False`` a token is its CDE row alone (the ``small``
preset: see PRESETS).

Features are centred before anything else: ``feature_mean`` (a buffer, saved with the
weights) is subtracted and the rows re-normalised. Training sets it to the mean of the
training features when ``config.center``; it is what lets the model cope with features
that are not zero-centred (dlib's face descriptor: cosine ~0.83 between different people).

With ``cosine_skip`` (both presets) the logit of position j is ``a * cos(x_j, x_0) + b +
head(...)``: raw cosine to the centre, on the features as given (not centred), through a
learned scale and offset, plus the transformer's correction. Training fits a and b to the
training links first and starts the head at zero, so the untrained model IS calibrated
cosine and training can only move away from it where held-out links say it helps (cf-train
keeps the epoch with the best held-out ROC-AUC, the untrained one included).

Weights are saved as a 'model' HDF5 artifact: group ``weights`` with one float32 dataset
per state_dict tensor, the config as a JSON attribute. Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CfError
from ...formats.artifacts import check_stored, open_artifact
from ...formats.schema import model_subtype
from ...formats.thresholds import check_model_thresholds
from ...formats.writing import write_artifact
from .dropout import use_cheap_dropout
from .grammar import centre_cosine, cosine_encoding
from .layers import attention, feed_forward, shared_self_attention

ENCODINGS = ("cde", "none", "learned", "sinusoidal")
# A config read from a file is checked against these before anything is built: far above
# the paper preset (width 512, 6+6 layers), far below allocations that take a machine down.
CONFIG_BOUNDS = {"dim": 1 << 16, "seq_len": 1 << 12, "width": 1 << 13, "heads": 1 << 8,
                 "ffn": 1 << 16, "encoder_layers": 64, "decoder_layers": 64}
MAX_PARAMETERS = 1 << 31  # 8 GiB of float32 weights


@dataclass
class ClusformerConfig:
    dim: int  # feature dimension d
    seq_len: int  # L
    width: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn: int = 256
    dropout: float = 0.1
    encoding: str = "cde"
    center: bool = True  # subtract the training features' mean (see module docstring)
    features: bool = True  # tokens carry the raw features; False: the CDE row alone
    cosine_skip: bool = False  # logit = learned correction + a * raw cosine + b (see below)

    def validate(self, path=None) -> ClusformerConfig:
        """Refuse wrong types and sizes past CONFIG_BOUNDS (before anything is built)."""
        for name, top in CONFIG_BOUNDS.items():
            value, least = getattr(self, name), 0 if name == "encoder_layers" else 1
            if type(value) is not int or not least <= value <= top:
                raise CfError(f"model config: {name} must be an integer in [{least}, {top}], "
                              f"got {value!r}", path)
        if not all(isinstance(getattr(self, n), bool) for n in ("center", "features",
                                                                 "cosine_skip")):
            raise CfError("model config: center, features, cosine_skip must be true or false",
                          path)
        if self.width % self.heads:
            raise CfError(f"model config: width {self.width} is not a multiple of heads "
                          f"{self.heads}", path)
        if type(self.dropout) not in (int, float) or not 0.0 <= self.dropout < 1.0:
            raise CfError("model config: dropout must be a number in [0, 1)", path)
        if not isinstance(self.encoding, str):
            raise CfError("model config: encoding must be a string", path)
        if not self.features and self.encoding != "cde":
            raise CfError("model config: features=false needs encoding cde (tokens would be empty)",
                          path)
        if self.encoding not in ENCODINGS:
            raise CfError(f"model config: encoding {self.encoding!r} is not one of "
                          f"{', '.join(ENCODINGS)}", path)
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path=None) -> ClusformerConfig:
        try:
            raw = json.loads(text)
        except (TypeError, ValueError) as err:
            raise CfError("model config attribute is not valid JSON", path) from err
        if not isinstance(raw, dict):
            raise CfError("model config attribute is not a JSON object", path)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise CfError(f"model config has unknown keys {unknown}", path)
        missing = sorted(n for n in ("dim", "seq_len") if n not in raw)
        if missing:
            raise CfError(f"model config lacks {missing}", path)
        return cls(**raw).validate(path)


# Presets: ``paper`` is the published shape (6+6 layers, 8 heads, width 512, tokens =
# feature + CDE row); ``small`` trains in minutes on a laptop CPU, and its tokens are the
# CDE row alone: with a small D_L the raw features mostly let it memorise the training
# identities (on the demo set its held-out ROC-AUC fell below raw cosine with them).
PRESETS = {
    "small": dict(width=128, heads=4, encoder_layers=2, decoder_layers=2, ffn=256, dropout=0.1,
                  features=False, cosine_skip=True),
    "paper": dict(width=512, heads=8, encoder_layers=6, decoder_layers=6, ffn=2048, dropout=0.1,
                  cosine_skip=True),
}


def make_config(preset: str, dim: int, seq_len: int, **overrides) -> ClusformerConfig:
    if preset not in PRESETS:
        raise CfError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if values.get("encoding", "cde") != "cde" and overrides.get("features") is None:
        values["features"] = True  # without the CDE a token must carry the feature
    return ClusformerConfig(dim=dim, seq_len=seq_len, **values).validate()


def token_dim(c: ClusformerConfig) -> int:
    """Size of a token before the input projection."""
    return (c.dim if c.features else 0) + (c.seq_len if c.encoding == "cde" else 0)


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : width // 2]
    return table


def _small_normal(rows: int, width: int) -> torch.Tensor:
    """A learned table's start, N(0, 0.02^2); only a shape under torch.device("meta")
    (load_model's check). torch's meta randn runs a Python reference kernel whose first
    call imports torch._dynamo: slow, and under torchrun that import keeps the process
    group alive until the interpreter's exit, where gloo's threads can abort it."""
    t = torch.empty(rows, width)
    return t if t.is_meta else torch.randn(rows, width) * 0.02


class Clusformer(nn.Module):
    feature_mean: torch.Tensor  # buffers
    pos_table: torch.Tensor

    def __init__(self, config: ClusformerConfig):
        super().__init__()
        self.config = c = config.validate()
        in_dim = token_dim(c)
        self.register_buffer("feature_mean", torch.zeros(c.dim))
        self.input_proj = nn.Linear(in_dim, c.width)
        if c.encoding == "learned":
            self.pos_embedding = nn.Parameter(_small_normal(c.seq_len, c.width))
        elif c.encoding == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(c.seq_len, c.width))
        self.queries = nn.Parameter(_small_normal(c.seq_len, c.width))

        def layer(cls):
            return cls(c.width, c.heads, c.ffn, c.dropout, batch_first=True, norm_first=True)

        self.encoder = (nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), c.encoder_layers,
                                              norm=nn.LayerNorm(c.width),
                                              enable_nested_tensor=False)
                        if c.encoder_layers else None)
        self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), c.decoder_layers,
                                             norm=nn.LayerNorm(c.width))
        self.head = nn.Linear(c.width, 1)
        use_cheap_dropout(self)  # dropout masks at a quarter of the random draws on the CPU
        if c.cosine_skip:  # (a, b) of a * cos + b; training fits them and zeroes the head
            self.skip = nn.Parameter(torch.tensor([1.0, 0.0]))

    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, d) neighbour features + (B, L) validity -> (B, L, width) input tokens.
        Centring and the CDE run in float32 even under autocast: cosines near 1 need it."""
        with torch.autocast(tokens.device.type, enabled=False):
            x = F.normalize(tokens.float() - self.feature_mean, dim=-1)
            x = x * mask.unsqueeze(-1).float()
            if self.config.encoding == "cde":
                cde = cosine_encoding(x)
                x = torch.cat([x, cde], dim=-1) if self.config.features else cde
        h = self.input_proj(x.to(self.input_proj.weight.dtype))  # bf16 when the weights are
        if self.config.encoding == "learned":
            h = h + self.pos_embedding
        elif self.config.encoding == "sinusoidal":
            h = h + self.pos_table
        return h

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, d) float, mask (B, L) bool (True = a real neighbour) -> logits (B, L).

        What nn.TransformerEncoder/Decoder (pre-norm, padded keys masked) compute, with
        their dropouts, written out on the layers' own weights: their training path
        converts masks and copies tensors between layouts, and draws the attention's
        dropout one random number an element (bench/results/code-choices.md)."""
        h = self.embed(tokens, mask)
        # (B, 1, 1, L): True = a key to attend to; None when every key of the batch counts
        keep = None if bool(mask.all()) else mask[:, None, None, :]
        if self.encoder is not None:
            for layer in self.encoder.layers:
                h = h + layer.dropout1(self._attention(layer.self_attn, layer.norm1(h), None,
                                                       keep))
                h = h + layer.dropout2(feed_forward(layer, layer.norm2(h), layer.dropout))
            h = self.encoder.norm(h)  # type: ignore[misc]  # built with a norm
        memory = h
        # the queries and their first self-attention are the same for every sequence but
        # for its dropout masks: computed once (1, L, W), the masks drawn per sequence
        x = self.queries.unsqueeze(0).to(memory.dtype)
        for n, layer in enumerate(self.decoder.layers):
            if n == 0:
                shared = shared_self_attention(layer.self_attn, layer.norm1(x), tokens.shape[0],
                                               self._weights_dropout(layer.self_attn))
                x = x + layer.dropout1(shared)
            else:
                x = x + layer.dropout1(self._attention(layer.self_attn, layer.norm1(x), None,
                                                       None))
            x = x + layer.dropout2(self._attention(layer.multihead_attn, layer.norm2(x), memory,
                                                   keep))
            x = x + layer.dropout3(feed_forward(layer, layer.norm3(x), layer.dropout))
        out = self.decoder.norm(x)  # type: ignore[misc]  # built with a norm
        logits = self.head(out).squeeze(-1)
        if self.config.cosine_skip:
            with torch.autocast(tokens.device.type, enabled=False):
                unit = F.normalize(tokens.float(), dim=-1)
                logits = logits.float() + self.cosine_logit(centre_cosine(unit))
        return logits

    def _attention(self, attn: nn.MultiheadAttention, x, memory, keep) -> torch.Tensor:
        """layers.attention with the attention weights' dropout in training mode."""
        return attention(attn, x, memory, keep, self._weights_dropout(attn))

    def _weights_dropout(self, attn: nn.MultiheadAttention) -> float:
        """The probability of dropping ``attn``'s weights: its dropout in training, else 0."""
        return attn.dropout if self.training else 0.0

    def cosine_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        """a * cos + b in float32: the part of the logit that is calibrated raw cosine."""
        a, b = self.skip.float()
        return cosine.float() * a + b

    # ------------------------------------------------------------------ inference path
    #
    # The same function as forward(), written out for inference (eval mode, no grad):
    # nn.Transformer*Layer's eval fast path runs a slow masked softmax, converts masks and
    # copies tensors between layouts (at width 128 those copies cost more than the
    # matmuls). Here attention is one fused QKV projection plus scaled_dot_product_attention
    # (two batched matmuls for bf16 on CPU), the centring and normalisation of the features
    # happen once for all N points (prepare), and the first decoder layer's self-attention
    # and cross-attention query, which read only the learned queries, are computed once per
    # batch instead of once per sequence.

    @torch.no_grad()
    def prepare(self, features: torch.Tensor, *, inplace: bool = False, dtype=torch.float32,
                block_rows: int = 1 << 16) -> torch.Tensor:
        """All N features centred and re-normalised (in float32, stored as ``dtype``): what
        infer() gathers from. ``inplace`` overwrites ``features`` block by block when it
        has that dtype: no second copy of N x d."""
        out = features if inplace and features.dtype == dtype \
            else torch.empty(features.shape, dtype=dtype, device=features.device)
        mean = self.feature_mean.float()
        for start in range(0, features.shape[0], block_rows):
            block = features[start:start + block_rows].float() - mean
            out[start:start + block_rows] = F.normalize(block, dim=-1)
        return out

    @property
    def needs_cosine(self) -> bool:
        """infer() needs the raw cosine to the centre (from ``unit_rows`` of the features)."""
        return self.config.cosine_skip

    @torch.no_grad()
    def infer(self, prepared: torch.Tensor, order: torch.Tensor, mask: torch.Tensor,
              cosine: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, L) for sequences ``order`` (B, L) over ``prepare``d features; equal to
        forward(features[order], mask) in eval mode (up to rounding). With ``cosine_skip``
        the raw cosine of every position to its centre, ``cosine`` (B, L) in float32, is
        needed too (prepare() centres the features, so it cannot be recovered here)."""
        c = self.config
        if c.cosine_skip and cosine is None:
            raise ValueError("this model adds raw cosine to its logits: pass cosine=")
        x = prepared[order]
        everything = bool(mask.all())  # no masked position in the batch: no masking at all
        if c.encoding == "cde":
            cde = torch.bmm(x, x.transpose(1, 2))
            if not everything:  # masked tokens' rows and columns are 0, as if zeroed first
                cde = cde * (mask.unsqueeze(-1) & mask.unsqueeze(-2))
                x = x * mask.unsqueeze(-1)
            x = torch.cat([x, cde], dim=-1) if c.features else cde
        elif not everything:
            x = x * mask.unsqueeze(-1)
        dtype = self.input_proj.weight.dtype
        h = F.linear(x.to(dtype), self.input_proj.weight, self.input_proj.bias)
        if c.encoding == "learned":
            h = h + self.pos_embedding
        elif c.encoding == "sinusoidal":
            h = h + self.pos_table.to(dtype)
        # (B, 1, 1, L): True = a key to attend to; None when every key of the batch counts
        keep = None if everything else mask[:, None, None, :]
        if self.encoder is not None:
            for layer in self.encoder.layers:
                h = h + attention(layer.self_attn, layer.norm1(h), None, keep)
                h = h + feed_forward(layer, layer.norm2(h))
            h = self.encoder.norm(h)  # type: ignore[misc]  # built with a norm
        memory = h
        layers = self.decoder.layers
        # (1, L, W) until it meets the memory: the same for every sequence, computed once
        x = self.queries.to(dtype).unsqueeze(0)
        for layer in layers:
            x = x + attention(layer.self_attn, layer.norm1(x), None, None)
            x = x + attention(layer.multihead_attn, layer.norm2(x), memory, keep)
            x = x + feed_forward(layer, layer.norm3(x))
        x = self.decoder.norm(x)  # type: ignore[misc]  # built with a norm
        logits = F.linear(x, self.head.weight, self.head.bias).squeeze(-1)
        if c.cosine_skip:
            assert cosine is not None  # checked on entry
            logits = logits.float() + self.cosine_logit(cosine)
        return logits


@torch.no_grad()
def unit_rows(features: torch.Tensor, *, inplace: bool = False, block_rows: int = 1 << 16
              ) -> torch.Tensor:
    """Rows scaled to unit length in float32, block by block (``inplace`` for float32
    input): what the raw cosine of a cosine-skip model is computed from."""
    out = features if inplace and features.dtype == torch.float32 \
        else torch.empty(features.shape, dtype=torch.float32, device=features.device)
    for start in range(0, features.shape[0], block_rows):
        out[start:start + block_rows] = F.normalize(features[start:start + block_rows].float(),
                                                    dim=-1)
    return out


def flops_per_sequence(c: ClusformerConfig) -> int:
    """Floating-point operations (2 per multiply-add) that infer() spends on one sequence,
    counted from the config: the matmuls of the CDE, projections, attention, FFNs, head.
    The first decoder layer's self-attention and its cross-attention query projection read
    only the learned queries; infer() runs them once per batch, so they are not counted
    (forward() spends ~12% more at width 128)."""
    L, W, F_ = c.seq_len, c.width, c.ffn
    in_dim = token_dim(c)
    attn = 4 * L * W * W + 2 * L * L * W  # q, k, v, out projections; scores and weighted sum
    ffn = 2 * L * W * F_
    macs = L * in_dim * W + L * W
    if c.encoding == "cde":
        macs += L * L * c.dim
    macs += c.encoder_layers * (attn + ffn) + c.decoder_layers * (2 * attn + ffn)
    macs -= attn + L * W * W  # the first decoder layer's query-only work, once per batch
    return 2 * macs


# --------------------------------------------------------------------------- files


def save_model(out, model: Clusformer, *, thresholds: dict | None = None,
               training: dict | None = None, inputs: dict | None = None) -> None:
    """Write a 'model' artifact: weights as float32 datasets, config/thresholds as JSON."""
    attrs = {"config": model.config.to_json(), "thresholds": json.dumps(thresholds or {}),
             "training": json.dumps(training or {})}
    with write_artifact(out, "model", inputs=inputs, attrs=attrs) as f:
        g = f.create_group("weights")
        for name, tensor in model.state_dict().items():
            g.create_dataset(name, data=tensor.detach().float().cpu().numpy())


def load_model(path, device="cpu"):
    """Read a 'model' artifact -> (Clusformer in eval mode, its Artifact attrs dict).

    Refused with a one-line CfError naming the file: not HDF5 (e.g. a pickle), truncated
    or corrupt, a bad config, a weight that is missing, unexpected, not a float array or of
    the wrong shape. Nothing is ever unpickled."""
    import h5py

    with open_artifact(path, "model") as art:
        if model_subtype(art.json_attr("config")) == "backbone":
            raise CfError("is a backbone (its config names the backbone's arch; made by cf-embed "
                          "train), expected a Clusformer model (made by cf-train)", art.path)
        config = ClusformerConfig.from_json(art.attrs["config"], art.path)
        # the shapes the config asks for, on the meta device (nothing allocated), checked
        # against the file's datasets before the model is built for real
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in Clusformer(config).state_dict().items()}
        if sum(math.prod(shape) for shape in expected.values()) > MAX_PARAMETERS:
            raise CfError(f"model config asks for more than {MAX_PARAMETERS} parameters",
                          art.path)
        group = art.file["weights"]
        names = set(group.keys())
        if missing := sorted(set(expected) - names):
            raise CfError(f"weights lack {len(missing)} tensors (first {missing[0]!r})", art.path)
        if unexpected := sorted(names - set(expected)):
            raise CfError(f"weights hold unexpected entries (first {unexpected[0]!r})", art.path)
        for name, shape in expected.items():
            ds = group[name]
            if not isinstance(ds, h5py.Dataset):
                raise CfError(f"weight {name!r} is not a dataset", art.path)
            if ds.dtype.kind != "f":
                raise CfError(f"weight {name!r} has dtype {ds.dtype}, expected float "
                              "(refusing non-numeric data)", art.path)
            if tuple(ds.shape) != shape:
                raise CfError(f"weight {name!r} has shape {tuple(ds.shape)}, but the model "
                              f"config asks for {shape}", art.path)
            check_stored(ds, art.path, f"weights/{name}")
        try:
            check_model_thresholds(art.json_attr("thresholds", {}), art.json_attr("training", {}))
        except ValueError as err:
            raise CfError(str(err), art.path) from None
        model = Clusformer(config)
        state = {}
        for name in expected:
            ds = group[name]
            try:
                value = np.asarray(ds[()], dtype=np.float32)
            except (OSError, RuntimeError) as err:
                raise CfError(f"cannot read weight {name!r} (truncated or corrupt?)", art.path) from err
            if not np.isfinite(value).all():
                raise CfError(f"weight {name!r} holds NaN or Inf", art.path)
            state[name] = torch.from_numpy(value)
        model.load_state_dict(state)
        attrs = dict(art.attrs)
        attrs["thresholds"] = art.json_attr("thresholds", {}) or {}
        attrs["training"] = art.json_attr("training", {}) or {}
        attrs["path"] = str(art.path)
    return model.to(device).eval(), attrs
