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
