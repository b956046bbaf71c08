"""Annotation files of the papers' data sets, read unchanged: EPIC-KITCHENS-100
(:mod:`longvid.data.epic`) and Kinetics (:mod:`longvid.data.kinetics`)."""
