"""Validation during training: evaluate after every epoch, log the metrics, keep the best weights.

Used by the families' runs (MA-LMM's, ReWind's) as the training core's ``on_step`` hook; what
"evaluate" and "keep" mean is the family's (its metrics, its weights file), so nothing here
knows a family.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence

from longvid.fileio import write_text_atomically


def forget_best(out_dir: str, names: Sequence[str]) -> None:
    """Remove an earlier run's best record and weights (``names`` under ``out_dir``): a new,
    not resumed run's best is its own."""
    for name in names:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)


class BestEpoch:
    """After every epoch (every ``steps_per_epoch`` steps, and at ``last_step`` when given and not
    an epoch's end), runs ``evaluate()`` (on every rank: it returns the metrics on the main rank,
    None elsewhere), writes ``{"step", "epoch", "val": metrics}`` to the run log (``run_log``, the
    trainer's), says one line, and when ``score(metrics)`` beats the best so far (strictly: the
    earliest epoch wins a tie) calls ``keep()`` (save the best weights) and writes ``record``
    (default ``out_dir/best.json``: step, epoch, score, criterion, metrics). A resumed run
    (``resume``) starts from the best its record holds."""

    def __init__(self, evaluate: Callable[[], dict | None], score: Callable[[dict], float], keep: Callable[[], object],
                 steps_per_epoch: int, out_dir: str, is_main: bool = True, resume: bool = False,
                 say: Callable[[str], None] = print, last_step: int | None = None, criterion: str = "",
                 record: str = "best.json"):
        self.evaluate, self.score, self.keep = evaluate, score, keep
        self.steps_per_epoch, self.is_main, self.say, self.last_step = max(1, steps_per_epoch), is_main, say, last_step
        self.criterion = criterion
        self.record_path = os.path.join(out_dir, record)
        self.best = -float("inf")
        if resume and os.path.exists(self.record_path):
            with open(self.record_path, encoding="utf-8") as f:
                self.best = json.load(f)["score"]
        self.run_log = None

    def __call__(self, record: dict) -> None:
        step = record["step"]
        if step % self.steps_per_epoch and step != self.last_step:
            return
        metrics = self.evaluate()
        if not self.is_main or metrics is None:
            return
        epoch = step // self.steps_per_epoch if step % self.steps_per_epoch == 0 else round(step / self.steps_per_epoch, 2)
        value = float(self.score(metrics))
        shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float))
        if self.run_log is not None:
            self.run_log.write({"step": step, "epoch": epoch, "val": metrics})
        better = value > self.best
        self.say(f"epoch {epoch} (step {step}) val: {shown}" + (f"  (best {self.criterion})" if better and self.criterion else ""))
        if better:
            self.best = value
            self.keep()
            write_text_atomically(self.record_path, json.dumps({"step": step, "epoch": epoch, "score": value,
                                                                "criterion": self.criterion, "metrics": metrics}) + "\n")
