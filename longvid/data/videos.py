"""One video resolver for every family: the file an annotation names, found under a video folder.

Annotation files name a video by an id (``LEOL6``, ``v_N7ppHQNikv8``, ``<youtube_id>_000010_000020``)
or by the original file's name (DiDeMo's ``<flickr id>.mov``, MovieChat-1K's ``1.mp4``); the
download scripts save it with whatever extension the source had. :class:`VideoFinder` finds, for a
name, the first of (in this order):

1. the file exactly as named, when the name has a video extension (``x.mov``);
2. the name plus any video extension (``LEOL6.mp4``, ``v_x.mkv``; and ``x.mov.mp4``: DiDeMo's AWS
   download script saves ``'%s/%s.mp4' % (dir, video)`` for a video named ``x.mov``);
3. when the name has a video extension, its stem plus any video extension (a converted copy:
   ``x.mp4`` for ``x.mov``).

Extensions match in any case (``P01_11.MP4``). When several files match one step (an ActivityNet
download holding ``v_x.mp4`` and ``v_x.webm``), the extension first in the preference order wins:
the caller's preferred extensions (e.g. ReWind's ``video_ext``), then :data:`VIDEO_EXTENSIONS` in
its order (``.mp4`` first: the container every download script can produce and every decoder
reads); files differing only in the extension's case go by name (``x.MP4`` before ``x.mp4``). The
answer never depends on the order a file system lists a folder in. Missing videos are None: each
family words its own message (what it expected, where it looked).

Folders are listed once per finder (one ``os.scandir`` each), so a finder resolves a whole
annotation file without a ``stat`` per candidate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

# Preference order (see the module docstring): what ties go by.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ogv", ".mts", ".m2ts")


def extension_order(prefer: Iterable[str] = ()) -> tuple[str, ...]:
    """The extensions tried, in order: ``prefer`` (lower case, a leading dot added; an extension
    not in :data:`VIDEO_EXTENSIONS` is accepted too), then :data:`VIDEO_EXTENSIONS`."""
    first = []
    for ext in prefer:
        ext = ext.strip().lower()
        if ext:
            first.append(ext if ext.startswith(".") else "." + ext)
    return tuple(dict.fromkeys([*first, *VIDEO_EXTENSIONS]))


class _Listing:
    """Video files by name: ``exact`` (file name or relative path, with its extension) and
    ``stems`` (the same without the extension) -> the file; the first added wins."""

    def __init__(self, rank: dict[str, int]):
        self.rank = rank
        self.exact: dict[str, str] = {}
        self.stems: dict[str, str] = {}

    def add_folder(self, folder: str, keys_prefix: Sequence[str]) -> list[str]:
        """Add ``folder``'s videos under each prefix (``""``: bare names, ``"a/b/"``: relative);
        returns its subfolders' names, sorted."""
        files, subfolders = [], []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_file():
                            files.append(entry.name)
                        elif entry.is_dir():
                            subfolders.append(entry.name)
                    except OSError:
                        continue
        except OSError:  # no such folder, or unreadable: nothing there
            return []
        videos = []
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in self.rank:
                videos.append((self.rank[ext.lower()], name, stem))
        for _, name, stem in sorted(videos):  # preferred extension first, then by name
            path = os.path.join(folder, name)
            for prefix in keys_prefix:
                self.exact.setdefault(prefix + name, path)
                self.stems.setdefault(prefix + stem, path)
        return sorted(subfolders)

    def get(self, name: str) -> str | None:
        """The file for ``name`` by the three steps of the module docstring, or None."""
        ext = os.path.splitext(name)[1].lower()
        named = ext in self.rank
        if named and name in self.exact:
            return self.exact[name]
        if name in self.stems:
            return self.stems[name]
        if named:
            return self.stems.get(name[: -len(ext)])
        return None


class VideoFinder:
    """The videos under ``root``; ``prefer``: extensions that win ties before the usual order::

        finder = VideoFinder("videos")
        finder.find("12345@N00_6789_abc.mov")  # videos/12345@N00_6789_abc.mov.mp4 (DiDeMo's download)
        finder.find("abc_000010_000020", folders=("", "abseiling"))  # flat, or in a class folder
        finder.find("v_x", names=("x",))  # ActivityNet, saved with or without its "v_"
    """

    def __init__(self, root: str, prefer: Iterable[str] = ()):
        self.root = root
        self.order = extension_order(prefer)
        self._rank = {ext: i for i, ext in enumerate(self.order)}
        self._folders: dict[str, _Listing] = {}

    def _in_folder(self, folder: str) -> _Listing:
        key = os.path.normpath(folder)
        if key not in self._folders:
            listing = _Listing(self._rank)
            listing.add_folder(key, ("",))
            self._folders[key] = listing
        return self._folders[key]

    def find(self, name: str, folders: Sequence[str] = ("",), names: Sequence[str] = ()) -> str | None:
        """The file of video ``name`` (a name may hold subfolders: ``P03/cam01/P03_cereals``), looked
        for in each of ``folders`` (relative to the root, in order), then likewise for each of
        ``names`` (other names of the same video); None when none is there."""
        for each in (name, *names):
            if not each:
                continue
            for folder in folders:
                where, base = os.path.split(os.path.join(self.root, folder, each))
                path = self._in_folder(where).get(base)
                if path is not None:
                    return path
        return None

    def index(self, max_depth: int = 3) -> VideoIndex:
        """Every video in the root and up to ``max_depth`` folders below it, by relative path and
        by bare name (folders visited depth-first in name order: the first one holding a name wins)."""
        listing = _Listing(self._rank)
        root = os.path.normpath(self.root)

        def visit(folder: str, relative: str, depth: int) -> None:
            subfolders = listing.add_folder(folder, (relative + "/", "") if relative else ("",))
            if depth < max_depth:
                for sub in subfolders:
                    visit(os.path.join(folder, sub), f"{relative}/{sub}" if relative else sub, depth + 1)

        visit(root, "", 0)
        return VideoIndex(listing)


class VideoIndex:
    """The videos of a folder tree (:meth:`VideoFinder.index`): :meth:`find` a name, by the same
    steps as :meth:`VideoFinder.find`."""

    def __init__(self, listing: _Listing):
        self._listing = listing

    def find(self, name: str, names: Sequence[str] = ()) -> str | None:
        for each in (name, *names):
            path = self._listing.get(each) if each else None
            if path is not None:
                return path
        return None

    def __len__(self) -> int:
        return len(set(self._listing.exact.values()))


def find_video(root: str, name: str, folders: Sequence[str] = ("",), names: Sequence[str] = (),
               prefer: Iterable[str] = ()) -> str | None:
    """One look-up with a fresh :class:`VideoFinder` (readers of whole files keep one finder)."""
    return VideoFinder(root, prefer).find(name, folders, names)
