"""What ReWind's memory remembers of each frame: a linear probe and the spread of the tokens.

Frame selection can only find the frames a question needs if each frame's memory tokens
say what that frame shows. Two measures, on the frames of watched videos:

* :func:`probe_accuracy`: a linear probe (multinomial logistic regression) from one
  frame's vector to its *cue class* (the class of the cue it shows, or "no cue"), fitted
  on the frames of training videos and scored on held-out videos: accuracy on the frames
  that show a cue (which class) and class-balanced accuracy over all frames (cue or not,
  and which).
* :func:`within_video_cosine`: the mean cosine similarity between the vectors of two
  different frames of the same video (1: every frame's tokens are the same).

Both are applied to the memory tokens (the ``N_W`` tokens of a frame concatenated) and,
for reference, to the frozen encoder's features of the same frames (mean over patches):
what the memory could carry at best.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def cue_labels(times: Tensor, cues: Sequence[tuple[int, float, float]], no_cue: int) -> Tensor:
    """``(N,)`` long: the class of the cue visible on each frame at ``times (N,)`` seconds
    (``cues``: ``(class, start, end)``), ``no_cue`` where none is."""
    labels = torch.full(times.shape, no_cue, dtype=torch.long)
    for cls, start, end in cues:
        labels[(times >= start) & (times < end)] = cls
    return labels


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                   steps: int = 200, weight_decay: float = 1e-3) -> dict[str, float]:
    """Fit a linear probe ``(n, d) -> num_classes`` on the training frames (features standardized
    with the training statistics, classes weighted to balance them; full-batch L-BFGS) and
    score it on the test frames.

    The last class is "no cue". Returns ``{"cue": accuracy (%) on test frames of the other
    classes, "balanced": mean over classes of the per-class recall (%)}``.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    x, x_test = (train_x - mean) / std, (test_x - mean) / std
    counts = torch.bincount(train_y, minlength=num_classes).clamp(min=1).to(x.dtype)
    class_weight = counts.sum() / (num_classes * counts)
    with torch.enable_grad():
        weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
        bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, train_y, weight=class_weight) + weight_decay * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    predicted = (x_test @ weight.detach() + bias.detach()).argmax(1)
    right = predicted == test_y
    cue = test_y != num_classes - 1
    recalls = [right[test_y == c].float().mean() for c in range(num_classes) if bool((test_y == c).any())]
    return {"cue": round(100.0 * float(right[cue].float().mean()), 1) if bool(cue.any()) else float("nan"),
            "balanced": round(100.0 * float(torch.stack(recalls).mean()), 1)}


def within_video_cosine(vectors: Tensor) -> float:
    """Mean cosine similarity between two different frames' vectors of one video, over the
    videos of ``vectors (V, N, d)``."""
    unit = F.normalize(vectors.double(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # (V, N, N)
    frames = vectors.shape[1]
    off_diagonal = ~torch.eye(frames, dtype=torch.bool)
    return float(similarity[:, off_diagonal].mean())
