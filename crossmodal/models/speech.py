"""Speech students: plain nn.Modules in the SPEECH_MODELS registry (``vggvox``, ``resnet34_thin``,
``small_cnn``), and the student model file (:func:`save_student`, :mod:`crossmodal.models.modelfile`).

Every network follows :class:`StudentNetwork` (docs/extending.md adds one) and pools over the valid
frames only, so a clip scores the same alone or in a padded batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.emotions import NUM_EMOTIONS
from crossmodal.models.blocks import BasicBlock, conv_bn
from crossmodal.registry import SPEECH_MODELS


@runtime_checkable
class StudentNetwork(Protocol):
    """What every registered speech student is. Constructor: keyword arguments only, ``num_classes`` (8),
    ``n_freq`` (the front-end's frequency bins, passed by the training module and the loader) and the
    network's own arguments from the config (``student.kwargs``); built by name with :func:`create_student`."""

    min_frames: int  # the shortest input [.., T] it accepts; shorter inputs are zero-padded up to it
    embed_dim: int  # D, the size of the embedding

    def __init__(self, *, num_classes: int = NUM_EMOTIONS, n_freq: int = 512, **kwargs: Any) -> None: ...

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, 1, F, T]`` and valid frame counts ``[B]`` (None: all valid) -> ``(logits [B, 8], embedding [B, D])``,
        pooled over the valid frames only."""
        ...


def time_mask(frames: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """``[B, length]`` boolean mask of the valid time steps (all valid when ``frames`` is None)."""
    if frames is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    frames = frames.to(device).clamp(min=1, max=length)
    return torch.arange(length, device=device)[None, :] < frames[:, None]


def scale_lengths(frames: torch.Tensor | None, in_length: int, out_length: int) -> torch.Tensor | None:
    """Valid output steps after a stack of strided layers, from the overall length ratio."""
    if frames is None:
        return None
    return torch.ceil(frames.float() * out_length / in_length).long().clamp(min=1, max=out_length)


def pad_time(x: torch.Tensor, min_frames: int) -> torch.Tensor:
    if x.shape[-1] >= min_frames:
        return x
    return F.pad(x, (0, min_frames - x.shape[-1]))


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over the last axis of ``x [B, C, T]`` using the ``mask [B, T]`` steps."""
    weights = mask.to(x.dtype).unsqueeze(1)
    count = weights.sum(-1).clamp(min=1)
    mean = (x * weights).sum(-1) / count
    var = (((x - mean.unsqueeze(-1)) ** 2) * weights).sum(-1) / count
    return mean, torch.sqrt(var + eps)


@SPEECH_MODELS.register("vggvox")
class VGGVox(nn.Module):
    """VGG-M with batch norm (Nagrani et al. 2017), the paper's student: fc6 is a (H x 1) convolution over what
    the conv stack leaves of the frequency axis (H = 9 for 512 bins), averaged over the valid time steps, then
    fc7 (the embedding) and fc8 (the emotions)."""

    min_frames = 65  # shortest input the conv/pool stack accepts (0.65 s at a 10 ms hop)

    def __init__(self, num_classes: int = NUM_EMOTIONS, n_freq: int = 512, fc6_channels: int = 4096, embed_dim: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 96, 7, 2, 1),
            nn.MaxPool2d(3, 2),
            conv_bn(96, 256, 5, 2, 1),
            nn.MaxPool2d(3, 2),
            conv_bn(256, 384, 3, 1, 1),
            conv_bn(384, 256, 3, 1, 1),
            conv_bn(256, 256, 3, 1, 1),
            nn.MaxPool2d((5, 3), (3, 2)),
        )
        height = (n_freq + 2 - 7) // 2 + 1  # the frequency bins left after self.features, layer by layer
        height = (height - 3) // 2 + 1
        height = (height + 2 - 5) // 2 + 1
        height = (height - 3) // 2 + 1
        height = (height - 5) // 3 + 1
        if height < 1:
            raise ValueError(f"vggvox needs at least ~60 frequency bins, got n_freq={n_freq}")
        self.fc6 = conv_bn(256, fc6_channels, (height, 1))
        self.fc7 = nn.Sequential(nn.Linear(fc6_channels, embed_dim, bias=False), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc8 = nn.Linear(embed_dim, num_classes)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = pad_time(x, self.min_frames)
        in_length = x.shape[-1]
        x = self.fc6(self.features(x)).squeeze(2)  # [B, 4096, T']
        frames = scale_lengths(frames, in_length, x.shape[-1])
        mean, _ = masked_mean_std(x, time_mask(frames, x.shape[0], x.shape[-1], x.device))
        embedding = self.fc7(mean)
        return self.fc8(self.dropout(embedding)), embedding


class _StatsPooled(nn.Module):
    """A conv stem and trunk (``self.stem``, ``self.trunk``), the frequency axis averaged away, then mean
    and std over the valid time steps -> a linear embedding -> the emotions (the x-vector recipe)."""

    def _add_head(self, width: int, embed_dim: int, num_classes: int, dropout: float) -> None:
        self.embed = nn.Sequential(nn.Linear(2 * width, embed_dim, bias=False), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = pad_time(x, self.min_frames)
        in_length = x.shape[-1]
        x = self.trunk(self.stem(x)).mean(2)  # [B, C, T']
        frames = scale_lengths(frames, in_length, x.shape[-1])
        mean, std = masked_mean_std(x, time_mask(frames, x.shape[0], x.shape[-1], x.device))
        embedding = self.embed(torch.cat([mean, std], 1))
        return self.head(self.dropout(embedding)), embedding


@SPEECH_MODELS.register("resnet34_thin")
class ThinResNet(_StatsPooled):
    """Thin ResNet (channels base x [1, 2, 4, 8], blocks [3, 4, 6, 3] = ResNet-34) with statistics pooling."""

    def __init__(self, num_classes: int = NUM_EMOTIONS, n_freq: int = 512, base_channels: int = 32,
                 layers: tuple[int, ...] | list[int] = (3, 4, 6, 3), first_stride: int = 2, embed_dim: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = conv_bn(1, base_channels, 3, first_stride, 1)
        stages, cin = [], base_channels
        for index, blocks in enumerate(layers):
            cout = base_channels * 2**index
            for block in range(blocks):
                stages.append(BasicBlock(cin, cout, 2 if (block == 0 and index > 0) else 1))
                cin = cout
        self.trunk = nn.Sequential(*stages)
        self._add_head(cin, embed_dim, num_classes, dropout)
        self.min_frames = first_stride * 2 ** (len(layers) - 1)


@SPEECH_MODELS.register("small_cnn")
class SmallCNN(_StatsPooled):
    """Four conv-BN-ReLU-pool blocks, frequency averaged, mean+std over time, a small embedding: about
    0.4 M parameters with the default widths, trains in minutes on 2 CPU cores."""

    def __init__(self, num_classes: int = NUM_EMOTIONS, n_freq: int = 512,
                 channels: tuple[int, ...] | list[int] = (16, 32, 64, 128), first_stride: int = 2, embed_dim: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.stem = nn.Identity()  # no weights: SmallCNN's trunk starts at the input
        blocks: list[nn.Module] = []
        cin = 1
        for index, cout in enumerate(channels):
            stride = (first_stride, 1) if index == 0 else 1
            blocks += [conv_bn(cin, cout, 3, stride, 1), nn.MaxPool2d(2, ceil_mode=True)]
            cin = cout
        self.trunk = nn.Sequential(*blocks)
        self._add_head(cin, embed_dim, num_classes, dropout)
        self.min_frames = 2 ** len(channels)


def create_student(name: str, **kwargs: Any) -> StudentNetwork:
    """The registered student ``name`` built with ``kwargs`` (``n_freq``: the front-end's frequency bins);
    refused, naming it, when it does not follow :class:`StudentNetwork`."""
    net = SPEECH_MODELS.create(name, **kwargs)
    if not isinstance(net, StudentNetwork):
        missing = [a for a in ("forward", "min_frames", "embed_dim") if not hasattr(net, a)]
        raise TypeError(f"speech network {name!r} ({type(net).__name__}) lacks {', '.join(missing)} of the student "
                        "interface (crossmodal.models.speech.StudentNetwork)")
    return net


def save_student(
    path: str | Path,
    net_name: str,
    net_kwargs: dict[str, Any],
    frontend_cfg: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a student model file atomically: fp32 weights, the registry name + arguments, the front-end
    config and ``provenance`` (data, teacher digest, run, metrics; commit and date are added); ``extra``
    (plain values, e.g. label classes) goes under ``info``, its provenance keys to ``provenance``."""
    from crossmodal.models.modelfile import make_header, plain, write_model_file

    extra = dict(plain(extra or {}))
    provenance = dict(plain(provenance or {}))
    for key in ("data", "teacher", "teacher_digest", "metrics", "checkpoint", "run"):  # provenance, wherever the caller put it
        if key in extra:
            provenance.setdefault(key, extra.pop(key))
    header = make_header(
        "student",
        {"name": net_name, "kwargs": plain(dict(net_kwargs))},
        frontend=plain(dict(frontend_cfg)),
        provenance=provenance,
        info=extra,
    )
    tensors = {k: v.detach().float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return write_model_file(path, header, tensors)
