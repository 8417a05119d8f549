"""The speech front-end: the paper's features, computed in batch, checked against torch.stft on a real clip."""
from __future__ import annotations

import pytest
import torch

from crossmodal.io.audio import load_audio
from crossmodal.models.frontend import SpeechFrontend


@pytest.fixture(scope="module")
def clip(emodb_root) -> torch.Tensor:
    return torch.from_numpy(load_audio(emodb_root / "wav" / "03a01Fa.wav", 16000))


def reference_spectrogram(wave: torch.Tensor) -> torch.Tensor:
    """The paper's recipe written out by hand with torch.stft (VGGVox: all 512 bins, no log)."""
    wave = wave.double()
    wave = wave - wave.mean()
    emphasised = torch.cat([wave[:1], wave[1:] - 0.97 * wave[:-1]])
    # a 25 ms window at the start of each 512-sample FFT frame (the 112 zeros only add resolution)
    window = torch.cat([torch.hamming_window(400, periodic=False, dtype=torch.float64), torch.zeros(112, dtype=torch.float64)])
    emphasised = torch.cat([emphasised, torch.zeros(112, dtype=torch.float64)])
    spec = torch.stft(emphasised, n_fft=512, hop_length=160, win_length=512, window=window, center=False, onesided=False, return_complex=True).abs()
    mean = spec.mean(-1, keepdim=True)
    std = torch.sqrt(((spec - mean) ** 2).mean(-1, keepdim=True)).clamp(min=1e-5)
    return (spec - mean) / std


def test_features_match_stft_reference(clip):
    frontend = SpeechFrontend().eval()
    features, frames = frontend(clip.unsqueeze(0))
    expected = reference_spectrogram(clip)
    assert features.shape == (1, 1, 512, expected.shape[-1])
    assert int(frames[0]) == expected.shape[-1] == (len(clip) - 400) // 160 + 1
    torch.testing.assert_close(features[0, 0].double(), expected, atol=2e-3, rtol=1e-3)
    # each frequency bin is normalised over time
    assert features[0, 0].mean(-1).abs().max() < 1e-3
    assert (features[0, 0].std(-1, unbiased=False) - 1).abs().max() < 1e-2


def test_padded_batch_gives_each_clip_its_own_features(clip):
    frontend = SpeechFrontend().eval()
    short = clip[:20000]
    batch = torch.zeros(2, len(clip))
    batch[0], batch[1, : len(short)] = clip, short
    features, frames = frontend(batch, torch.tensor([len(clip), len(short)]))
    alone, alone_frames = frontend(short.unsqueeze(0))
    assert int(frames[1]) == int(alone_frames[0])
    n = int(frames[1])
    torch.testing.assert_close(features[1, 0, :, :n], alone[0, 0, :, :n], atol=1e-3, rtol=1e-3)
    assert features[1, 0, :, n:].abs().max() == 0  # padding stays zero


def test_logmel_and_specaugment_only_in_training(clip):
    frontend = SpeechFrontend(features="logmel", n_mels=40, f_min=20, f_max=8000, freq_mask=8, time_mask=20)
    frontend.eval()
    first, _ = frontend(clip.unsqueeze(0))
    second, _ = frontend(clip.unsqueeze(0))
    assert first.shape[:3] == (1, 1, 40)
    torch.testing.assert_close(first, second)
    frontend.train()
    torch.manual_seed(0)
    masked, _ = frontend(clip.unsqueeze(0))
    assert not torch.allclose(masked, first)
    assert (masked == 0).any()


def test_silent_and_too_short_clips_give_finite_features():
    frontend = SpeechFrontend().eval()
    features, frames = frontend(torch.zeros(1, 16000))
    assert torch.isfinite(features).all()
    features, frames = frontend(torch.randn(1, 100))  # shorter than one 25 ms window
    assert features.shape[-1] == 1 and int(frames[0]) == 1 and torch.isfinite(features).all()


def test_onesided_option_and_config_round_trip():
    frontend = SpeechFrontend(onesided=True, dither=1e-5)
    assert frontend.n_freq == 257
    again = SpeechFrontend(**frontend.frontend_config())
    assert again.frontend_config() == frontend.frontend_config()
