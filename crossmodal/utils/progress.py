"""Progress bars for long commands (prepare, extract, evaluate): tqdm, quiet when not a terminal."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    # On a terminal, a live bar; in logs and CI, a line every ~10% (mininterval) to keep logs short.
    interactive = sys.stderr.isatty()
    return tqdm(
        items,
        desc=desc,
        unit=unit,
        total=total,
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 15.0,
        disable=os.environ.get("CROSSMODAL_NO_PROGRESS") == "1",
    )
