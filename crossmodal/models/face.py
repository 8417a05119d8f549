"""Face-expression backbones (8 FER+ emotions) and their input preprocessing: the nets of ``FACE_MODELS``,
any timm model (:func:`create_face_backbone`) and the authors' MatConvNet ports of their teachers
(``resnet50_ferplus_dag.pth`` / ``senet50_ferplus_dag.pth``: :func:`load_matconvnet_ferplus`). Pretrained
weights never come from the network, and no weights file runs code (:func:`load_weights_file`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal import paper
from crossmodal.emotions import NUM_EMOTIONS
from crossmodal.models.blocks import BasicBlock, conv_bn
from crossmodal.registry import FACE_MODELS

log = logging.getLogger(__name__)


@dataclass
class PreprocessSpec:
    """How face images become network input, stored with every trained teacher: made grey (the paper feeds
    grey faces, even to 3-channel nets), copied to ``channels``, resized to ``resize`` x ``resize`` (bilinear),
    cropped to ``input_size`` (centre; random in training), then ``(x - mean) / std`` on 0..255 values."""

    channels: int = 1
    resize: int = 48
    input_size: int = 48
    mean: list[float] = field(default_factory=lambda: [128.0])
    std: list[float] = field(default_factory=lambda: [64.0])

    @classmethod
    def from_config(cls, config: dict | None) -> PreprocessSpec:
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown preprocess key(s) {sorted(unknown)}; valid: {', '.join(cls.__dataclass_fields__)}")
        spec = cls(**{k: [float(x) for x in v] if k in ("mean", "std") else int(v) for k, v in config.items()})
        if spec.input_size > spec.resize:
            raise ValueError(f"preprocess.input_size={spec.input_size} is larger than preprocess.resize={spec.resize}")
        for name in ("mean", "std"):
            values = getattr(spec, name)
            if len(values) not in (1, spec.channels):
                raise ValueError(f"preprocess.{name} has {len(values)} values; give 1 or {spec.channels} (channels)")
        return spec

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "resize": self.resize, "input_size": self.input_size,
                "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    def to_float_nchw(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float images [N,H,W] grey, [N,H,W,3] RGB or [N,C,H,W] -> grey float [N,1,H,W] in 0..255."""
        if images.ndim == 3:
            x = images.unsqueeze(1)
        elif images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
            x = images.permute(0, 3, 1, 2)
        elif images.ndim == 4:
            x = images
        else:
            raise ValueError(f"face images must be [N,H,W], [N,H,W,3] or [N,C,H,W], got shape {tuple(images.shape)}")
        x = x.float()
        if x.shape[1] == 3:  # ITU-R 601 luma, as PIL's convert("L")
            x = (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114)
        elif x.shape[1] != 1:
            raise ValueError(f"face images need 1 or 3 channels, got {x.shape[1]}")
        return x

    def __call__(self, images: torch.Tensor, random_crop: bool = False) -> torch.Tensor:
        x = self.to_float_nchw(images)
        if x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.resize)
        if self.input_size < self.resize:
            margin = self.resize - self.input_size
            if random_crop:
                top, left = (int(v) for v in torch.randint(margin + 1, (2,)))
            else:
                top = left = margin // 2
            x = x[:, :, top:top + self.input_size, left:left + self.input_size]
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


@FACE_MODELS.register("vgg_small")
class FerVGG(nn.Module):
    """VGG-style stages of 3x3 conv + BN + ReLU, max-pool after each stage, then a small MLP head."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (2, 2, 3, 3),
                 in_chans: int = 1, num_classes: int = NUM_EMOTIONS, hidden: int = 256, drop_rate: float = 0.5,
                 stage_dropout: float = 0.0, global_pool: bool = False, input_size: int = 44) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for width, depth in zip(widths, depths):
            for _ in range(depth):
                layers.append(conv_bn(cin, width, 3, 1, 1))
                cin = width
            layers.append(nn.MaxPool2d(2))
            if stage_dropout:
                layers.append(nn.Dropout(stage_dropout))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        flat = cin if global_pool else cin * side * side
        self.num_features = flat
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(flat, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(drop_rate), nn.Linear(hidden, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@FACE_MODELS.register("resnet18_small")
class SmallResNet(nn.Module):
    """ResNet-18 layout with a 3x3 stride-1 stem and no max-pool, for 40-64 px faces."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), blocks: Sequence[int] = (2, 2, 2, 2),
                 in_chans: int = 1, num_classes: int = NUM_EMOTIONS, drop_rate: float = 0.3) -> None:
        super().__init__()
        self.stem = conv_bn(in_chans, widths[0], 3, 1, 1)
        stages, cin = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            for j in range(count):
                stages.append(BasicBlock(cin, width, 2 if j == 0 and index > 0 else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(cin, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _init(module: nn.Module) -> None:
    """He init of the convs (batch norm starts at weight 1, bias 0: torch's own init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


@FACE_MODELS.register("vgg13_ferplus")
def vgg13_ferplus(in_chans: int = 1, num_classes: int = NUM_EMOTIONS, drop_rate: float = 0.5, input_size: int = 64, **kwargs: Any) -> FerVGG:
    """The FER+ paper's VGG13 (Barsoum et al. 2016): 64x64 input, 64-128-256-256, FC 1024 x2 (here with BN)."""
    return FerVGG(widths=(64, 128, 256, 256), depths=(2, 2, 3, 3), in_chans=in_chans, num_classes=num_classes,
                  hidden=1024, drop_rate=drop_rate, stage_dropout=0.25, input_size=input_size, **kwargs)


@contextlib.contextmanager
def _hf_offline():
    """Hugging Face hub in offline mode: pretrained weights only from the local cache."""
    import huggingface_hub.constants as hf_constants

    saved_env, saved_const = os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def create_face_backbone(name: str, num_classes: int = NUM_EMOTIONS, pretrained: str | bool | None = None,
                         drop_rate: float = 0.5, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """A face backbone by name: a ``FACE_MODELS`` entry, or any timm model with an 8-way head. ``pretrained``:
    None/False (random init), a local weights file (:func:`load_pretrained_file`), or ``"cache"`` / True (timm's
    pretrained weights from the local timm/HF cache, never downloaded)."""
    kwargs.update(num_classes=num_classes, drop_rate=drop_rate, in_chans=in_chans)
    from_cache = pretrained is True or pretrained == "cache"
    if name in FACE_MODELS:
        model = FACE_MODELS.create(name, **kwargs)
    else:
        import timm

        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise KeyError(f"unknown face backbone {name!r}: not in FACE_MODELS ({', '.join(FACE_MODELS.names())}) "
                           f"nor in timm (similar: {', '.join(close) or 'none'})")
        cached_file = _torch_hub_cached_file(name) if from_cache else None
        if cached_file is not None:  # weights published as a URL only: the torch hub cache, never the URL
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(cached_file)},
                                      **kwargs)
        elif from_cache:
            with _hf_offline():
                try:
                    model = timm.create_model(name, pretrained=True, **kwargs)
                except OSError as exn:  # the hub's cache miss (LocalEntryNotFoundError, OfflineModeIsEnabled)
                    raise FileNotFoundError(f"pretrained weights for {name!r} are not in the local timm/Hugging Face cache "
                                            f"and crossmodal never downloads them ({exn}). Give model.pretrained=/path/to/weights") from exn
                except Exception as exn:  # noqa: BLE001 - re-raised: anything else timm raises, named, not "not cached"
                    raise RuntimeError(f"timm could not build {name!r} with its cached pretrained weights "
                                       f"({type(exn).__name__}: {exn}); give model.pretrained=/path/to/weights, "
                                       "or model.pretrained=null to start from random weights") from exn
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
    if pretrained and not from_cache:
        load_pretrained_file(model, pretrained)
    return model


def _torch_hub_cached_file(name: str) -> Path | None:
    """For a timm model whose weights have no Hugging Face id, the torch hub cache file (or an error)."""
    from urllib.parse import urlparse

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or cfg.hf_hub_id:
        return None
    if not cfg.url:
        raise FileNotFoundError(f"timm publishes no pretrained weights for {name!r}; give model.pretrained=/path/to/weights")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
    if not cached.exists():
        raise FileNotFoundError(f"pretrained weights for {name!r} are not in the torch hub cache ({cached}) and crossmodal "
                                f"never downloads them. Put the file there or give model.pretrained=/path/to/weights")
    return cached


def load_weights_file(path: str | Path) -> Any:
    """Tensors of a user's weights file: safetensors, or a ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``
    (crossmodal's allow-list only). A pickle that would run code is refused with an error naming the file."""
    from crossmodal.models.modelfile import is_safetensors, safe_torch_load

    if is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return safe_torch_load(path)


def load_pretrained_file(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict into ``model``, skipping tensors whose shape differs (e.g. the classifier);
    returns the names of the parameters loaded (the "pretrained layers")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist (model.pretrained)")
    state = load_weights_file(path)
    for key in ("state_dict", "model", "state"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"no tensor in {path} matches the model's names and shapes; is it for this architecture?")
    skipped = sorted(set(state) - set(usable))
    if skipped:
        log.info("pretrained %s: %d tensors loaded, %d skipped (first: %s)", path.name, len(usable), len(skipped), skipped[:3])
    model.load_state_dict(usable, strict=False)
    return sorted(usable)


MATCONVNET_ARCHS = {"resnet50": "resnet50", "senet50": "legacy_seresnet50"}
MATCONVNET_PREPROCESS = PreprocessSpec(channels=3, resize=paper.FACE_SIZE, input_size=paper.FACE_SIZE,
                                       mean=list(paper.FACE_MEAN), std=list(paper.FACE_STD))
_STAGES = {2: "layer1", 3: "layer2", 4: "layer3", 5: "layer4"}


def matconvnet_key_to_timm(key: str, arch: str) -> str | None:
    """Map one key of ``resnet50_ferplus_dag`` / ``senet50_ferplus_dag`` to timm's name (None: not a tensor we use)."""
    module, _, param = key.rpartition(".")
    if param == "num_batches_tracked":
        return None
    seq = arch == "senet50"
    if module in ("conv1_7x7_s2", "conv1_7x7_s2_bn"):
        name = ("layer0.conv1" if seq else "conv1") if module == "conv1_7x7_s2" else ("layer0.bn1" if seq else "bn1")
        return f"{name}.{param}"
    if module == "classifier":
        return f"{'last_linear' if seq else 'fc'}.{param}"
    match = re.fullmatch(r"conv(\d)_(\d+)_(1x1_reduce|3x3|1x1_increase|1x1_proj|1x1_down|1x1_up)(_bn)?", module)
    if not match:
        return None
    stage, block, part, bn = int(match[1]), int(match[2]) - 1, match[3], bool(match[4])
    if stage not in _STAGES or block < 0:
        return None
    prefix = f"{_STAGES[stage]}.{block}"
    if part == "1x1_proj":
        return f"{prefix}.downsample.{1 if bn else 0}.{param}"
    if part in ("1x1_down", "1x1_up"):
        return f"{prefix}.se_module.{'fc1' if part == '1x1_down' else 'fc2'}.{param}"
    index = {"1x1_reduce": 1, "3x3": 2, "1x1_increase": 3}[part]
    return f"{prefix}.{'bn' if bn else 'conv'}{index}.{param}"


def convert_matconvnet_state_dict(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename a MatConvNet-port state dict to timm names; reshape the conv-style classifier to linear."""
    if arch not in MATCONVNET_ARCHS:
        raise ValueError(f"unknown MatConvNet FER+ architecture {arch!r}: use resnet50 or senet50")
    out: dict[str, torch.Tensor] = {}
    unused = []
    for key, value in state.items():
        new = matconvnet_key_to_timm(key, arch)
        if new is None:
            if not key.endswith("num_batches_tracked"):
                unused.append(key)
            continue
        if new.startswith(("fc.", "last_linear.")) and value.ndim == 4:
            value = value.flatten(1)
        out[new] = value
    if unused:
        raise ValueError(f"{len(unused)} keys of the {arch} FER+ state dict have no place in timm's "
                         f"{MATCONVNET_ARCHS[arch]} (first: {unused[:3]}); is this resnet50/senet50_ferplus_dag?")
    return out


def guess_matconvnet_arch(state: dict[str, torch.Tensor]) -> str:
    return "senet50" if any("1x1_down" in k for k in state) else "resnet50"


def matconvnet_backbone(arch: str) -> nn.Module:
    """timm's resnet50 / legacy_seresnet50 with the geometry of the Caffe-born MatConvNet models: the ports
    downsample in the first 1x1 conv of a stage (Caffe ResNet), not in the 3x3 as timm's resnet50 does, and
    pool1 is a 3x3/2 max-pool without padding, rounding up. timm's legacy_seresnet50 already has both."""
    import timm

    model = timm.create_model(MATCONVNET_ARCHS[arch], pretrained=False, num_classes=NUM_EMOTIONS)
    if arch == "resnet50":
        model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        for stage in (model.layer2, model.layer3, model.layer4):
            first = stage[0]
            first.conv1.stride, first.conv2.stride = (2, 2), (1, 1)
    return model


def load_matconvnet_ferplus(source: str | Path | dict[str, torch.Tensor], arch: str | None = None) -> tuple[nn.Module, PreprocessSpec]:
    """The authors' teacher port as a timm model in eval mode, with its preprocessing (224 px, paper mean, std 1)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"MatConvNet FER+ weights {path} do not exist")
        state = load_weights_file(path)
    else:
        state = source
    arch = arch or guess_matconvnet_arch(state)
    converted = convert_matconvnet_state_dict(state, arch)
    model = matconvnet_backbone(arch)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"MatConvNet {arch} state dict does not fill timm {MATCONVNET_ARCHS[arch]}: "
                         f"missing {missing[:3]} ({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    return model.eval(), MATCONVNET_PREPROCESS


def _matconvnet_entry(arch: str, num_classes: int = NUM_EMOTIONS, drop_rate: float = 0.0, in_chans: int = 3) -> nn.Module:
    """The geometry of <arch>_ferplus_dag (load its weights with load_matconvnet_ferplus)."""
    if in_chans != 3 or num_classes != NUM_EMOTIONS:
        raise ValueError(f"matconvnet_{arch} takes 3-channel 224 px faces and has {NUM_EMOTIONS} outputs")
    model = matconvnet_backbone(arch)
    model.drop_rate = drop_rate
    return model


for _arch in MATCONVNET_ARCHS:  # matconvnet_resnet50, matconvnet_senet50
    FACE_MODELS.register(f"matconvnet_{_arch}")(functools.partial(_matconvnet_entry, _arch))
