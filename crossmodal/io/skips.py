"""Skipped samples: counted per reason with a few example paths, or raised when strict; who calls it and
where the counts go (shard manifests, run metrics): docs/conventions.md."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

SKIP_EXAMPLES = 5  # paths kept per skip reason, so a report names real files


class BadSampleError(RuntimeError):
    """A sample could not be used and ``strict=true`` asked for an error instead of a skip."""


class SkipLog:
    """Counts skipped items by reason and keeps a few of their paths for the report."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        message = f"{reason}: {where}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise BadSampleError(message + ". Fix or remove it, or set strict=false to skip and count such items.")
        self.counts[reason] += 1
        if self.counts[reason] <= SKIP_EXAMPLES:  # the rest are counted (and logged at debug level) only
            tail = f"; further '{reason}' skips are counted, not logged" if self.counts[reason] == SKIP_EXAMPLES else ""
            log.warning("skipped %s%s", message, tail)
        else:
            log.debug("skipped %s", message)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < SKIP_EXAMPLES:
            examples.append(where)

    def merge(self, other: dict[str, Any]) -> None:
        for reason, n in other.get("counts", {}).items():
            self.counts[reason] += n
            examples = self.examples.setdefault(reason, [])
            examples += other.get("examples", {}).get(reason, [])[: SKIP_EXAMPLES - len(examples)]

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": self.examples}
