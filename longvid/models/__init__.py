"""Whole systems (MeMViT, MA-LMM, ReWind) and their shared blocks."""
