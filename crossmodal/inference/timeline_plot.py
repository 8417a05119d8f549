"""The timeline picture: face thumbnails along the time axis, the teacher's distribution from the face
above, the student's from the voice below (stacked areas, one fixed colour per emotion:
:data:`crossmodal.emotions.EMOTION_COLORS`), and their agreement per window at the bottom."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.emotions import EMOTION_COLORS
from crossmodal.inference.timeline_result import Timeline
from crossmodal.utils import atomic
from crossmodal.utils.plots import close, plt

FACE_TITLE = "face: teacher"
VOICE_TITLE = "voice: student"
DPI = 100


def window_bands(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Edges [n + 1] of the band each window owns in the picture: from the middle between its centre
    and the previous one's to the middle between its centre and the next one's (first and last
    windows reach their own start and end), so overlapping windows tile the time axis."""
    centres = (np.asarray(starts) + np.asarray(ends)) / 2
    middles = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[starts[0]], middles, [ends[-1]]])


def _stack(ax, edges: np.ndarray, probabilities: np.ndarray, emotions, missing: np.ndarray | None = None, label: str = "no face") -> None:
    """Stacked areas, piecewise constant over each window's band; ``missing`` bands are hatched and
    say ``label`` where there is room."""
    x = np.repeat(edges, 2)[1:-1]  # [e0, e1, e1, e2, e2, ...]
    values = np.nan_to_num(np.repeat(probabilities, 2, axis=0)).T  # [emotions, 2n]
    ax.stackplot(x, values, colors=[EMOTION_COLORS.get(name, "black") for name in emotions], labels=list(emotions), linewidth=0)
    for i in np.flatnonzero(missing) if missing is not None else ():
        ax.axvspan(edges[i], edges[i + 1], facecolor="#f4f4f4", edgecolor="#bbbbbb", hatch="//", linewidth=0)
        if edges[i + 1] - edges[i] > 0.04 * (edges[-1] - edges[0]):
            ax.text((edges[i] + edges[i + 1]) / 2, 0.5, label, ha="center", va="center", fontsize=8, color="#666666")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")


def _thumbnails(ax, timeline: Timeline, height_px: float, span: tuple[float, float]) -> None:
    """Face crops at their times, as many as fit side by side without overlapping (left to right)."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    ax.set(ylim=(0, 1), yticks=[])
    ax.tick_params(bottom=False)
    ax.spines[:].set_visible(False)
    width_px = ax.get_position().width * ax.figure.get_figwidth() * DPI
    seconds_per_px = (span[1] - span[0]) / width_px
    right = -np.inf
    for time, crop in timeline.thumbnails:
        half = 0.5 * (height_px * crop.shape[1] / crop.shape[0] + 4) * seconds_per_px
        if time - half < right:
            continue
        right = time + half
        image = OffsetImage(crop, zoom=height_px / crop.shape[0], cmap="gray" if crop.ndim == 2 else None)
        ax.add_artist(AnnotationBbox(image, (time, 0.5), frameon=True, pad=0.1, bboxprops={"edgecolor": "#888888", "linewidth": 0.5}))
    if not timeline.thumbnails:
        ax.text(0.5, 0.5, "no face found in the video", transform=ax.transAxes, ha="center", va="center", color="#666666")


def timeline_figure(timeline: Timeline):
    """The figure: thumbnails, face panel, voice panel, agreement strip (4 axes sharing the time axis)."""
    starts = np.asarray([w.start for w in timeline.windows])
    ends = np.asarray([w.end for w in timeline.windows])
    edges = window_bands(starts, ends)
    teacher, student = timeline.teacher_probabilities(), timeline.student_probabilities()
    missing = np.isnan(teacher).any(axis=1)
    silent = np.isnan(student).any(axis=1)
    fig = plt.figure(figsize=(12, 7.2), dpi=DPI)
    grid = fig.add_gridspec(4, 1, height_ratios=[1.1, 2.2, 2.2, 0.9], hspace=0.32, left=0.06, right=0.86, top=0.92, bottom=0.08)
    thumbs, face, voice, agree = grid.subplots(sharex=True)  # time labels on the bottom one only
    _thumbnails(thumbs, timeline, 0.85 * thumbs.get_position().height * fig.get_figheight() * DPI, (edges[0], edges[-1]))
    _stack(face, edges, teacher, timeline.emotions, missing)
    face.set_title(f"{FACE_TITLE} (window {timeline.settings['reduce']} of frame logits, softmax at T={timeline.temperature:g})", fontsize=9, loc="left")
    _stack(voice, edges, student, timeline.emotions, silent, "no speech")
    voice.set_title(f"{VOICE_TITLE} ({timeline.settings['window']:g}-s windows every {timeline.settings['hop']:g} s)", fontsize=9, loc="left")
    _agreement(agree, timeline, edges)
    agree.set_xlim(edges[0], edges[-1])
    agree.set_xlabel("time (s)")
    handles, labels = face.get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", fontsize=9, frameon=False, title="emotion")
    summary = timeline.summary()
    match = "no face and speech to compare" if summary["top_match_rate"] is None else f"top emotions agree in {summary['top_match_rate']:.0%}"
    fig.suptitle(
        f"{Path(timeline.path).name}: {timeline.duration:.1f} s, {summary['windows']} windows: {summary['windows_with_face']} with a face, "
        f"{summary['windows_with_speech']} with speech; {match}",
        fontsize=11, x=0.06, ha="left",
    )
    return fig


def _agreement(ax, timeline: Timeline, edges: np.ndarray) -> None:
    """Per window: the KL form of the distillation loss (0 = the student matches the teacher), and a
    green (top emotions match) or red (differ) band; nothing where there is no face or no speech."""
    agreement = timeline.agreement()
    kl = np.asarray([np.nan if a is None else a["kl"] for a in agreement])
    for i, a in enumerate(agreement):
        if a is not None:
            ax.axvspan(edges[i], edges[i + 1], ymin=0, ymax=0.18, color="#4caf50" if a["top_match"] else "#e53935", linewidth=0)
    centres = (edges[1:] + edges[:-1]) / 2
    if np.isfinite(kl).any():
        ax.plot(centres, kl, color="black", marker="o" if len(kl) < 60 else None, markersize=3, linewidth=1)
        ax.set_ylim(0, max(float(np.nanmax(kl)) * 1.25, 0.05))
    ax.set_ylabel("KL", fontsize=9)
    ax.set_title("agreement: KL(teacher || student) at T, band = top emotions match (green) or not (red)", fontsize=8, loc="left")


def save_timeline_png(timeline: Timeline, path: str | Path) -> Path:
    fig = timeline_figure(timeline)
    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        close(fig)
    return Path(path)
