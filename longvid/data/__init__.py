"""Annotation files of the papers' data sets, read unchanged: EPIC-KITCHENS-100
(:mod:`longvid.data.epic`), Kinetics (:mod:`longvid.data.kinetics`), AVA v2.2
(:mod:`longvid.data.ava`) and MA-LMM's data sets (:mod:`longvid.data.lmm`)."""
