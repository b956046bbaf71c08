"""MeMViT's run config: the engine's :class:`~longvid.engine.config.TrainConfig` plus the task,
data, model and loss fields of a MeMViT run (``longvid train`` / ``longvid eval``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from longvid.engine.config import TrainConfig

TASKS = ("classify", "epic_verb_noun", "epic_anticipation", "ava")


@dataclass(frozen=True)
class MeMViTRunConfig(TrainConfig):
    """Everything a MeMViT training run needs besides the model weights and the data files.

    Data: ``data`` is a generic annotation file (CSV/JSON/JSONL), a Kinetics-style
    ``root/<class>/<video>`` folder, or ``"synthetic"`` (generated clips; see
    :func:`longvid.memvit.data.synthetic_source`). Progressive schedule: epoch ``e``
    uses videos cut into ``progressive[min(e // stage_epochs, len - 1)]``-clip
    segments (``()`` keeps whole videos).
    """

    model: str = "memvit_tiny"
    task: str = "classify"  # classify | epic_verb_noun | epic_anticipation | ava (see longvid.memvit.tasks)
    num_classes: int = 10  # classify: classes of the linear head
    data: str = "synthetic"
    val_data: str | None = None
    classes: str | None = None  # class list file (names, index order) for files that name classes
    video_root: str | None = None  # folder of the videos an annotation file names (default: the file's folder)
    val_video_root: str | None = None  # folder of val_data's videos (default: video_root), e.g. Kinetics' val/
    strict: bool = False  # a video an annotation file names is missing: error (else skipped and counted)
    memory_len: int | None = None  # MeMViT memory length M (None: the model preset's)
    sampler: str | None = None  # MeMViT memory sampler: consecutive | gapN (None: the model preset's)
    context_clips: int | None = None  # EPIC: clips before each segment's clips that build memory (None: the model's reach)
    # EPIC-KITCHENS-100 (tasks epic_verb_noun, epic_anticipation)
    num_verbs: int = 97
    num_nouns: int = 300
    video_info: str | None = None  # EPIC_100_video_info.csv (fps and duration; default: read from each video)
    tail_verbs: str | None = None  # EPIC_100_tail_verbs.csv: adds the tail-class metrics
    tail_nouns: str | None = None  # EPIC_100_tail_nouns.csv
    unseen_participants: str | None = None  # EPIC_100_unseen_participant_ids_validation.csv: the unseen split
    tau_a: float = 1.0  # anticipation time: the observed clip ends tau_a seconds before the segment starts
    # AVA v2.2 (task ava)
    action_list: str | None = None  # ava_action_list_v2.2_for_activitynet_2019.pbtxt: the evaluated classes (60)
    excluded_timestamps: str | None = None  # ava_val_excluded_timestamps_v2.2.csv: keyframes left out of the evaluation
    person_boxes: str | None = None  # detected person boxes (AVA CSV layout, 8th field the score): what evaluation scores
    box_threshold: float = 0.8  # detections with a lower score are left out
    # fine-tuning
    init_from: str | None = None  # checkpoint (official .pyth or ours) whose backbone starts the run
    freeze: str = "none"  # none | backbone (train the heads only)
    clip_frames: int = 8
    stride: int = 4
    size: int = 64  # short side and square center crop of file clips
    augment: bool = False  # training clips: random short-side scale (size*256/224..size*340/224), random crop, flip
    synthetic_videos: int = 16
    synthetic_clips: int = 4
    progressive: tuple[int, ...] = ()
    stage_epochs: int = 1
    memory_drop: bool = True
    loss: str = "ce"  # "ce" (label smoothing), "bce" (multi-hot), "eql" (softmax equalization loss)
    loss_clips: str = "all"  # "all": every clip carries its video's loss; "last": only each video's last clip
    label_smoothing: float = 0.0
    eql_lambda: float = 0.003
    eval_every: int = 1  # epochs; 0: never
    find_unused_parameters: bool = True  # DDP: memory modules get no gradient while memory is empty
    # issue 29: AVA test view; MeMViT ablation knobs (None: the model preset's)
    ava_test_crop: str = "full"  # AVA evaluation: "full" frames (short side size; the paper's) or the "center" size crop
    compress_stride: tuple[int, ...] | None = None  # memory compression stride T,H,W, e.g. 4,2,2 (Table 1c; 1,1,1: none)
    memory_blocks: tuple[int, ...] | None = None  # blocks that read memory, e.g. 0,2,4 (Table 1b; None: the even blocks)

    def video_folder(self, path: str, val: bool = False) -> str:
        """Where the videos of annotation file ``path`` are: ``val_video_root`` for ``val_data``
        (``val``) when set, else ``video_root``, else ``path``'s folder."""
        root = (self.val_video_root or self.video_root) if val else self.video_root
        return root or os.path.dirname(os.path.abspath(path))

    def clips_per_video(self, epoch: int) -> int | None:
        """Segment length for ``epoch`` under the progressive schedule (None: whole videos)."""
        if not self.progressive:
            return None
        return self.progressive[min(epoch // self.stage_epochs, len(self.progressive) - 1)]

    def _checks(self) -> list[tuple[bool, str]]:
        finite = math.isfinite
        return super()._checks() + [
            (self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}"),
            (self.num_verbs >= 1 and self.num_nouns >= 1, f"num_verbs and num_nouns must be >= 1, got {self.num_verbs}, {self.num_nouns}"),
            (finite(self.tau_a) and self.tau_a >= 0, f"tau_a must be >= 0 seconds, got {self.tau_a}"),
            (self.context_clips is None or self.context_clips >= 0, f"context_clips must be >= 0, got {self.context_clips}"),
            (self.memory_len is None or self.memory_len >= 0, f"memory_len must be >= 0, got {self.memory_len}"),
            (self.freeze in ("none", "backbone"), f"freeze must be 'none' or 'backbone', got {self.freeze!r}"),
            (self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}"),
            (self.clip_frames >= 1, f"clip_frames must be >= 1, got {self.clip_frames}"),
            (self.stride >= 1, f"stride must be >= 1, got {self.stride}"),
            (self.size >= 1, f"size must be >= 1, got {self.size}"),
            (self.synthetic_videos >= 1, f"synthetic_videos must be >= 1, got {self.synthetic_videos}"),
            (self.synthetic_clips >= 1, f"synthetic_clips must be >= 1, got {self.synthetic_clips}"),
            (self.stage_epochs >= 1, f"stage_epochs must be >= 1, got {self.stage_epochs}"),
            (all(k >= 1 for k in self.progressive), f"progressive clip counts must be >= 1, got {self.progressive}"),
            (self.loss in ("ce", "bce", "eql"), f"loss must be 'ce', 'bce' or 'eql', got {self.loss!r}"),
            (self.loss_clips in ("all", "last"), f"loss_clips must be 'all' or 'last', got {self.loss_clips!r}"),
            (finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (finite(self.eql_lambda) and self.eql_lambda >= 0, f"eql_lambda must be >= 0, got {self.eql_lambda}"),
            (self.eval_every >= 0, f"eval_every must be >= 0 (0: never), got {self.eval_every}"),
            (self.ava_test_crop in ("full", "center"), f"ava_test_crop must be 'full' or 'center', got {self.ava_test_crop!r}"),
            (self.compress_stride is None or (len(self.compress_stride) == 3 and min(self.compress_stride) >= 1),
             f"compress_stride must be three strides T,H,W >= 1 (e.g. 4,2,2), got {self.compress_stride}"),
            (self.memory_blocks is None or (len(self.memory_blocks) > 0 and min(self.memory_blocks) >= 0
                                            and len(set(self.memory_blocks)) == len(self.memory_blocks)),
             f"memory_blocks must be distinct block indices >= 0 (e.g. 0,2,4), got {self.memory_blocks}"),
        ]  # fmt: skip
