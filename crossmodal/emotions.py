"""The emotion classes, in FER+ order. Every model, shard and metric in crossmodal uses this order."""

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
NUM_EMOTIONS = len(EMOTIONS)
# FER+ vote columns: the 8 emotions, then the two "no emotion" columns.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = EMOTIONS + ("unknown", "NF")
# The paper's mean AUC leaves out the emotions that are rarely dominant in interview video.
RARE_IN_THE_WILD: tuple[str, ...] = ("disgust", "fear", "contempt")


def emotion_index(name: str) -> int:
    try:
        return EMOTIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}") from None

# One fixed colour per emotion, used by every per-emotion plot (timelines, ROC curves, per-emotion bars),
# so that an emotion looks the same in every figure of the project.
EMOTION_COLORS: dict[str, str] = {
    "neutral": "#9e9e9e",
    "happiness": "#f2b701",
    "surprise": "#17becf",
    "sadness": "#1f77b4",
    "anger": "#d62728",
    "disgust": "#2ca02c",
    "fear": "#9467bd",
    "contempt": "#8c564b",
}
