"""MA-LMM's data sets, read from the annotation files MA-LMM releases (``data/*/annotation/``),
unchanged; videos from files. See :mod:`longvid.data.lmm.formats` and :mod:`longvid.data.lmm.frames`."""

from longvid.data.lmm.formats import DATASETS, LMMItem, VideoSummary, find_videos, read_dataset
from longvid.data.lmm.frames import read_uniform_frames, uniform_times

__all__ = ["DATASETS", "LMMItem", "VideoSummary", "find_videos", "read_dataset", "read_uniform_frames", "uniform_times"]
