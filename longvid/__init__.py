"""longvid: long video understanding with memory (MeMViT, MA-LMM, ReWind)."""

from longvid.errors import LongvidError

__all__ = ["LongvidError"]
