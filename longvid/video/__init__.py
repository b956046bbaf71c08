"""Video input: streaming clip reader, tensor transforms, writing test videos."""

from longvid.video.reader import ClipReader, VideoInfo, probe, read_clips
from longvid.video.types import Clip, VideoDecodeWarning, VideoError
from longvid.video.writer import write_video

__all__ = ["Clip", "ClipReader", "VideoDecodeWarning", "VideoError", "VideoInfo", "probe", "read_clips", "write_video"]
