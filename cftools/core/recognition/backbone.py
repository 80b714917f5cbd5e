"""The image backbone: a compact ResNet whose pooling + classifier are replaced by a linear
embedding layer, and its model file (HDF5, weights as datasets, never a pickle).

Layout (insightface's "IR" ResNets, written out here because torchvision is not used):
stem conv3x3 (stride 1, or 2 for images >= 160 px so 224-px landmark images cost what
112-px faces do) -> four stages of basic (depth 18/34) or bottleneck (50) blocks, each
stage halving the resolution -> BN -> flatten -> Linear -> BN1d = the ``dim``-d embedding.
Flattening (instead of global pooling) keeps where on the face a feature was seen; maps
larger than 7x7 are average-pooled to 7x7 first so odd image sizes keep the layer small.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ...errors import CfError
from ...formats.schema import BACKBONE_ARCH, model_subtype

ARCH = BACKBONE_ARCH
STAGES = {18: ((2, 2, 2, 2), "basic"), 34: ((3, 4, 6, 3), "basic"), 50: ((3, 4, 6, 3), "bottleneck")}
MAX_GRID = 7


@dataclass
class BackboneConfig:
    depth: int = 18
    width: int = 64  # channels of the first stage; stages use width * (1, 2, 4, 8)
    dim: int = 256
    image_size: int = 112
    mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])  # of RGB in [0, 1]
    std: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    arch: str = ARCH

    def __post_init__(self):
        if self.depth not in STAGES:
            raise CfError(f"unsupported ResNet depth {self.depth} (choose 18, 34 or 50)")
        if self.width < 1 or self.dim < 1 or self.image_size < 8:
            raise CfError("backbone width and dim must be >= 1 and image size >= 8")

    @property
    def stem_stride(self) -> int:
        return 2 if self.image_size >= 160 else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.short(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class Backbone(nn.Module):
    """images (B, 3, S, S), normalised -> embeddings (B, dim), not yet L2-normalised."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        counts, kind = STAGES[config.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, config.stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        stages, cin = [], w
        for i, n in enumerate(counts):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w * 2 ** i, 2 if j == 0 else 1))
                cin = w * 2 ** i * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        side = _out_side(config.image_size, config.stem_stride)
        self.pool = nn.AdaptiveAvgPool2d(MAX_GRID) if side > MAX_GRID else nn.Identity()
        side = min(side, MAX_GRID)
        self.out_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin * side * side, config.dim)
        self.features = nn.BatchNorm1d(config.dim)
        for m in self.modules():
            # not on the meta device (load_backbone's shape check): see _small_normal in
            # core.clusformer.model for why a meta normal_ is to be avoided
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = self.out_bn(self.pool(x))
        return self.features(self.fc(torch.flatten(x, 1)))


def _out_side(size: int, stem_stride: int) -> int:
    side = (size - 1) // stem_stride + 1
    for _ in range(4):
        side = (side - 1) // 2 + 1  # conv3x3 / conv1x1, stride 2, padding 1 or 0
    return side


# --------------------------------------------------------------------------- model file


def save_backbone(out, model: Backbone, *, inputs: dict | None = None, extra: dict | None = None) -> None:
    """Write the backbone as a cftools 'model' file: one dataset per state_dict tensor."""
    from ...formats.writing import write_artifact

    config = json.loads(model.config.to_json())
    config.update(extra or {})
    with write_artifact(out, "model", inputs=inputs, attrs={"config": config}) as f:
        g = f.create_group("weights")
        for name, tensor in model.state_dict().items():
            g.create_dataset(name, data=tensor.detach().cpu().numpy())


def load_backbone(path, device="cpu") -> tuple[Backbone, BackboneConfig, object]:
    """Read a backbone model file without unpickling anything: the datasets of 'weights'
    must be exactly the model's tensors, numeric, of the right shapes and finite."""
    from ...formats.artifacts import check_stored, open_artifact

    with open_artifact(path, "model") as art:
        raw = art.json_attr("config")
        if model_subtype(raw) == "clusformer":
            raise CfError("is a Clusformer model (made by cf-train; its config names no arch), "
                          "expected a backbone (made by cf-embed train)", path)
        if not isinstance(raw, dict) or raw.get("arch") != ARCH:
            arch = raw.get("arch") if isinstance(raw, dict) else None
            raise CfError(f"is a model of arch {arch!r}, expected a {ARCH} (made by cf-embed train)",
                          path)
        try:
            config = BackboneConfig(**{k: raw[k] for k in ("depth", "width", "dim", "image_size",
                                                            "mean", "std")})
        except KeyError as err:
            raise CfError(f"model config lacks {err}", path) from None
        except (TypeError, ValueError) as err:
            raise CfError(f"model config is invalid: {err}", path) from None
        with torch.device("meta"):  # shapes only: nothing allocated before the file is checked
            want = Backbone(config).state_dict()
        group = art.file["weights"]
        extra = sorted(set(group.keys()) - set(want))
        missing = sorted(set(want) - set(group.keys()))
        if missing:
            raise CfError(f"weights lack {len(missing)} tensors of the model (first: {missing[0]})", path)
        if extra:
            raise CfError(f"weights hold {len(extra)} tensors the model does not have "
                          f"(first: {extra[0]})", path)
        state = {}
        for name, ref in want.items():
            ds = group[name]
            if not hasattr(ds, "dtype"):
                raise CfError(f"weights/{name} is not a dataset", path)
            if ds.dtype.kind not in "fiub":
                raise CfError(f"weights/{name} has non-numeric dtype {ds.dtype} (refused: "
                              "weights must be plain numbers)", path)
            if tuple(ds.shape) != tuple(ref.shape):
                raise CfError(f"weights/{name} has shape {tuple(ds.shape)}, the model needs "
                              f"{tuple(ref.shape)}", path)
            check_stored(ds, path, f"weights/{name}")
        model = Backbone(config)
        for name, ref in want.items():
            value = art.read(f"weights/{name}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CfError(f"weights/{name} holds NaN or Inf", path)
            state[name] = torch.from_numpy(np.asarray(value)).to(ref.dtype)
        model.load_state_dict(state)
    # the (closed) artifact still carries id and provenance for the next file's history
    return model.to(device).eval(), config, art


def model_summary(config: BackboneConfig) -> str:
    counts, kind = STAGES[config.depth]
    return (f"ResNet-{config.depth} ({kind} blocks), width {config.width}, "
            f"{config.image_size}px, {config.dim}-d embedding")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def memory_format(device: torch.device):
    """channels-last on CUDA, where cuDNN runs these convolutions faster. Not on CPU: with
    torch 2.13 a second channels-last model of another width in the same process corrupts
    the heap (double free, segfault), and CPU gains only ~25%."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
