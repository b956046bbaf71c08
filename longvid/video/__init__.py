"""Video input: streaming clip reader, tensor transforms, writing test videos."""

from longvid.video.reader import Clip, ClipReader, VideoDecodeWarning, VideoError, VideoInfo, probe, read_clips
from longvid.video.writer import write_video

__all__ = ["Clip", "ClipReader", "VideoDecodeWarning", "VideoError", "VideoInfo", "probe", "read_clips", "write_video"]
