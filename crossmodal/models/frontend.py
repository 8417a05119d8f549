"""Speech front-end: raw 16 kHz waveforms in, normalised spectrogram features out, on the device, in batch.

The paper's features (VGGVox's): DC removal and dither, pre-emphasis 0.97, 25 ms Hamming window,
10 ms hop, 512-point FFT magnitude, no log, no mel, each frequency bin normalised to zero mean
and unit variance over time. VGGVox keeps all 512 bins of the FFT (the mirrored half included),
which is what makes its fc6 a 9x1 convolution; ``onesided=true`` keeps the 257 distinct bins.
Log-mel features are the alternative (``features="logmel"``), and SpecAugment time/frequency
masks apply in training mode only. Normalisation statistics use only the valid frames and padded
frames are zeroed, so an utterance's features do not depend on what it was batched with.
"""
from __future__ import annotations

from typing import Any

import torch
import torchaudio
from torch import nn

FEATURES = ("spectrogram", "logmel")


class SpeechFrontend(nn.Module):
    """Waveform ``[B, samples]`` (+ lengths) -> features ``[B, 1, F, frames]`` (+ frame lengths). Every constructor
    argument is a plain value, so ``frontend_config()`` round-trips through the student file and Hydra configs."""

    def __init__(
        self, sample_rate: int = 16000, features: str = "spectrogram", n_fft: int = 512, win_ms: float = 25.0,
        hop_ms: float = 10.0, preemphasis: float = 0.97, dither: float = 0.0, remove_dc: bool = True,
        onesided: bool = False, normalize: bool = True,
        n_mels: int = 64, f_min: float = 20.0, f_max: float | None = None,  # logmel
        freq_mask: int = 0, time_mask: int = 0, n_freq_masks: int = 1, n_time_masks: int = 1,  # SpecAugment (training)
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"frontend.features={features!r} is not one of {FEATURES}")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.sample_rate = sample_rate
        self.features = features
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        if self.win_length > n_fft:
            raise ValueError(f"frontend: window of {self.win_length} samples is longer than n_fft={n_fft}")
        self.preemphasis = preemphasis
        self.dither = dither
        self.remove_dc = remove_dc
        self.normalize = normalize
        self.eps = eps
        onesided = onesided or features == "logmel"
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, win_length=self.win_length, hop_length=self.hop_length, window_fn=torch.hamming_window,
            wkwargs={"periodic": False},  # MATLAB's hamming(), as in VGGVox
            power=1.0 if features == "spectrogram" else 2.0, center=False, onesided=onesided,
        )
        self.mel = None
        if features == "logmel":
            self.mel = torchaudio.transforms.MelScale(n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
                                                      n_stft=n_fft // 2 + 1)
        self.n_freq = n_mels if features == "logmel" else (n_fft // 2 + 1 if onesided else n_fft)
        masks: list[nn.Module] = []
        if freq_mask > 0:
            masks += [torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) for _ in range(n_freq_masks)]
        if time_mask > 0:
            masks += [torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) for _ in range(n_time_masks)]
        self.spec_augment = nn.Sequential(*masks)

    def frontend_config(self) -> dict[str, Any]:
        return dict(self.config)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames for waveforms of ``lengths`` samples (short ones count as one padded frame)."""
        return torch.clamp(torch.div(lengths - self.win_length, self.hop_length, rounding_mode="floor") + 1, min=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"frontend expects waveforms [batch, samples], got shape {tuple(wave.shape)}")
        wave = wave.float()
        batch, samples = wave.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=wave.device)
        lengths = lengths.to(wave.device).long().clamp(max=samples)
        valid = torch.arange(samples, device=wave.device)[None, :] < lengths[:, None]
        wave = wave * valid
        if self.remove_dc:
            mean = wave.sum(1, keepdim=True) / lengths.clamp(min=1)[:, None]
            wave = (wave - mean) * valid
        if self.dither > 0 and self.training:
            wave = wave + self.dither * torch.randn_like(wave) * valid
        if self.preemphasis:
            wave = torchaudio.functional.preemphasis(wave, self.preemphasis)
        # torch.stft centres the win_length window inside each n_fft frame: pad half the difference
        # on both sides so frame k covers samples [k*hop, k*hop + win) as in VGGVox, and a clip of L
        # samples gives (L - win) // hop + 1 frames; a too-short clip still gives one padded frame.
        side = (self.spectrogram.n_fft - self.win_length) // 2
        short = max(0, self.win_length - samples)
        wave = nn.functional.pad(wave, (side, side + short))
        spec = self.spectrogram(wave)  # [B, F, T]
        if self.mel is not None:
            spec = torch.log(self.mel(spec) + 1e-6)
        frames = self.num_frames(lengths).clamp(max=spec.shape[-1])
        mask = (torch.arange(spec.shape[-1], device=spec.device)[None, :] < frames[:, None]).unsqueeze(1)  # [B, 1, T]
        if self.normalize:
            spec = normalize_per_bin(spec, mask, self.eps)
        spec = (spec * mask).unsqueeze(1)  # [B, 1, F, T]
        if self.training and len(self.spec_augment):
            spec = self.spec_augment(spec)
        return spec, frames


def normalize_per_bin(spec: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance of each frequency bin over the valid frames (``mask`` [B, 1, T])."""
    mask = mask.to(spec.dtype)
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = (spec * mask).sum(-1, keepdim=True) / count
    var = (((spec - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    # eps bounds the std from below (not added to the variance): quiet recordings have tiny
    # per-bin variances that must still be scaled to 1; a silent bin stays 0.
    return (spec - mean) / torch.sqrt(var).clamp(min=eps)


def build_frontend(config: dict[str, Any] | None) -> SpeechFrontend:
    """A front-end from a (possibly partial) config dict; unknown keys fail with their name."""
    config = dict(config or {})
    try:
        return SpeechFrontend(**config)
    except TypeError as exn:
        import inspect

        known = [p for p in inspect.signature(SpeechFrontend.__init__).parameters if p != "self"]
        raise TypeError(f"bad frontend config {config}: {exn}. Known keys: {', '.join(known)}") from exn
