"""Per-iteration metrics: one JSON object per line in ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None marks a non-finite metric
    return value


class MetricsWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, metrics: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n")

    def truncate_after(self, iteration: int) -> None:
        """Drop lines past ``iteration`` (used on resume, so no iteration is logged twice)."""
        if not self.path.exists():
            return
        lines = [l for l in self.path.read_text().splitlines() if l.strip()]
        kept = [l for l in lines if json.loads(l).get("iteration", 0) <= iteration]
        self.path.write_text("".join(l + "\n" for l in kept))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
