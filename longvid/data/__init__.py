"""Annotation files of the papers' data sets, read unchanged: EPIC-KITCHENS-100
(:mod:`longvid.memvit.epic_files`), Kinetics (:mod:`longvid.memvit.kinetics_files`), AVA v2.2
(:mod:`longvid.memvit.ava_files`) and MA-LMM's data sets (:mod:`longvid.data.lmm`)."""
