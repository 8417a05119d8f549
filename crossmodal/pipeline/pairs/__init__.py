"""Talking-face pair shards: one sample = one speech segment of one face track.

    python -m crossmodal.run task=prepare prep=pairs prep.source=/data/voxceleb2/dev/mp4

Sources (``data.layout``; ``auto`` tells them apart):
- ``voxceleb2``: ``<source>/<id>/<youtube_id>/<n>.mp4``, face-centred videos with their own audio
  track (a ``<n>.m4a`` beside the mp4 is preferred for the audio when present). No detection: a
  centre crop of ``center_crop`` of each frame (the paper's 1/1.6 of the released face box).
- ``voxceleb1``: ``<source>/wav/<id>/<youtube_id>/<n>.wav`` with the released face frames in
  ``<frames_root>/<id>/<youtube_id>/<n>/*.jpg``; a frame file's number is its frame index at
  ``frames_fps`` (25), so its time is (index - first index) / frames_fps: the first frame is taken
  to start with the wav, as the released utterances are cut to their face tracks. Centre crop
  as above.
- ``videos``: any folder of talking-face videos. Faces are found and tracked with OpenCV (see
  :mod:`crossmodal.io.video`). Identity = the first folder under ``source`` (``<id>/...``), or
  the file name for videos lying directly in ``source``.

Every segment is cut from one face track: a track is split into equal pieces no longer than
``segment_seconds``; a track shorter than ``min_segment_seconds`` is skipped (``too_short``).
Audio is 16 kHz mono FLAC; frames are JPEG face crops (``crop_size`` square, grey unless
``grey=false``), stored as fields ``f000.jpg``, ``f001.jpg``, ... with ``times.npy`` (float32
seconds from the segment start) and ``json`` (identity, video, utterance, track, segment, split,
start and duration in seconds, sample_rate, frame_rate, synthetic, source paths).

Shards are named by split (:mod:`crossmodal.io.splits`), the split saved as ``splits.json`` beside them.
Bad input is counted by reason with example paths, or raises with ``strict=true``; a killed run resumes.
Modules, each importing only those before it: codec, config, discovery, alignment, tracks, build.
"""
from __future__ import annotations

from crossmodal.pipeline.pairs.alignment import align_audio_to_video, av_offset
from crossmodal.pipeline.pairs.build import PairsConfig, plan_jobs, prepare_pairs
from crossmodal.pipeline.pairs.codec import decode_pair_frames, make_pair_sample, npy_bytes
from crossmodal.pipeline.pairs.config import PairRecipe, PairSettings, prepare_report
from crossmodal.pipeline.pairs.discovery import PairItem, discover

__all__ = [
    "PairItem", "PairRecipe", "PairSettings", "PairsConfig", "align_audio_to_video", "av_offset", "decode_pair_frames",
    "discover", "make_pair_sample", "npy_bytes", "plan_jobs", "prepare_pairs", "prepare_report",
]
