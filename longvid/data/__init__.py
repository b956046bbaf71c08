"""Data every family shares: generic annotation files with file:line errors
(:mod:`~longvid.data.annotations`), JSON with line numbers (:mod:`~longvid.data.jsonfiles`),
label files (:mod:`~longvid.data.labels`), the one video resolver (:mod:`~longvid.data.videos`),
clip sources (:mod:`~longvid.data.sources`) and generated videos (:mod:`~longvid.data.synth`).
Each data set a family reads (EPIC-KITCHENS-100, Kinetics, AVA; MA-LMM's; ReWind's) lives in
that family's folder."""
