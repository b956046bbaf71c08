"""The original ViT features of the frames a ReWind stream has seen, as a value.

The LLM reads the selected frames' original features, so a stream keeps them all
(DFS may pick any frame). :class:`FrameStore` holds, per stream, a tuple of immutable
chunks (one per step that kept frames); a step appends a chunk by building a new tuple,
so the store passed in never changes and two states may share chunks without copying.

Policies: ``keep_every=1`` keeps every frame, ``keep_every=k`` keeps frames
``0, k, 2k, ...`` (a frame that was not kept is served by the last kept frame before
it, which stays causal); ``spill_dir`` writes each chunk to its own file in a temporary
folder there and reads it back through a memory map (``np.memmap``), so RAM holds none of
the features; a file is deleted when no state refers to its chunk any more. The
features stay in host memory (or on disk) whatever device the rest of the state is on:
only the frames the LLM reads are moved to the model.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import tempfile
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from longvid.errors import LongvidError

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


class SpillFolder:
    """A temporary folder (removed when the last chunk written there is gone) for chunk files."""

    def __init__(self, parent: str | os.PathLike):
        os.makedirs(parent, exist_ok=True)
        self._tempdir = tempfile.TemporaryDirectory(prefix="longvid-features-", dir=parent)
        self._names = itertools.count()

    def write(self, features: Tensor) -> "SpilledChunk":
        """``features (n, P, D_v)`` written to a new file."""
        array = (features if features.dtype in _NUMPY_DTYPES else features.float()).numpy()
        path = os.path.join(self._tempdir.name, f"chunk{next(self._names)}.f")
        array.tofile(path)
        return SpilledChunk(self, path, tuple(array.shape), array.dtype)


class SpilledChunk:
    """Frames ``(n, P, D_v)`` in a file, read through ``np.memmap``: ``len(chunk)``, ``chunk[rows]``."""

    def __init__(self, folder: SpillFolder, path: str, shape: tuple[int, ...], dtype: np.dtype):
        self.folder, self.path, self.shape, self.dtype = folder, path, shape, dtype  # the folder lives while its chunks do
        weakref.finalize(self, _remove, path)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Tensor) -> Tensor:
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)
        return torch.from_numpy(np.array(mapped[rows.numpy()]))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


Chunk = Tensor | SpilledChunk


@dataclass(frozen=True)
class FrameStore:
    """Kept frame features of ``B`` streams: ``chunks[b]`` holds stream ``b``'s slots in order
    (slot ``s`` is frame ``s * keep_every``). ``dtype``: what features are stored as (None: as
    they come); ``spill``: where new chunks go (None: RAM)."""

    chunks: tuple[tuple[Chunk, ...], ...]
    keep_every: int = 1
    dtype: torch.dtype | None = None
    spill: SpillFolder | None = None

    @classmethod
    def empty(cls, batch_size: int, keep_every: int = 1, dtype: torch.dtype | None = None,
              spill_dir: str | os.PathLike | None = None) -> "FrameStore":
        if keep_every < 1:
            raise LongvidError(f"the frame store's keep_every must be >= 1, got {keep_every}")
        if dtype is not None and spill_dir is not None and dtype not in _NUMPY_DTYPES:
            raise LongvidError(f"a spilled frame store keeps float32 or float16, not {dtype}")
        spill = None if spill_dir is None else SpillFolder(spill_dir)
        return cls(((),) * batch_size, keep_every, dtype, spill)

    @property
    def batch_size(self) -> int:
        return len(self.chunks)

    def num_stored(self) -> list[int]:
        """Slots stored per stream."""
        return [sum(len(c) for c in stream) for stream in self.chunks]

    def append(self, first_frame: Tensor, features: Tensor, count: Tensor) -> "FrameStore":
        """The store with frames ``first_frame[b] .. first_frame[b] + count[b] - 1`` of each stream
        added (the kept ones): ``first_frame (B,)`` long, ``features (B, T, P, D_v)``, ``count (B,)``."""
        features = features.detach().cpu()
        if self.dtype is not None:
            features = features.to(self.dtype)
        chunks = []
        for stream, held in enumerate(self.chunks):
            start, num = int(first_frame[stream]), int(count[stream])
            kept = torch.arange(-(-start // self.keep_every), -(-(start + num) // self.keep_every)) * self.keep_every - start
            new = features[stream, kept]  # (n, P, D_v): a copy, not a view of the batch
            chunks.append(held + (self._keep(new),) if len(new) else held)
        return dataclasses.replace(self, chunks=tuple(chunks))

    def _keep(self, features: Tensor) -> Chunk:
        return features if self.spill is None else self.spill.write(features)

    def stored_frame(self, frames: Tensor) -> Tensor:
        """The frame whose features :meth:`read` returns for each of ``frames``."""
        return torch.div(frames, self.keep_every, rounding_mode="floor") * self.keep_every

    def read(self, stream: int, frames: Tensor) -> Tensor:
        """Features ``(n, P, D_v)`` of frames ``frames (n,)`` of one stream."""
        slots = torch.div(frames.cpu(), self.keep_every, rounding_mode="floor").tolist()
        chunks = self.chunks[stream]
        ends = list(itertools.accumulate(len(c) for c in chunks))  # slots stored up to each chunk
        if slots and (not ends or max(slots) >= ends[-1]):
            raise LongvidError(f"frame {int(frames.max())} of stream {stream} is not in the frame store")
        parts = []
        for slot in slots:
            c = bisect.bisect_right(ends, slot)
            parts.append(chunks[c][torch.tensor([slot - ends[c] + len(chunks[c])])])  # (1, P, D_v)
        return torch.cat(parts) if parts else torch.zeros(0)

    def reset(self, mask: Tensor) -> "FrameStore":
        """Streams where ``mask (B,)`` is True emptied."""
        return dataclasses.replace(self, chunks=tuple(() if bool(m) else held for m, held in zip(mask.tolist(), self.chunks)))

    def index_select(self, index: Tensor) -> "FrameStore":
        return dataclasses.replace(self, chunks=tuple(self.chunks[i] for i in index.tolist()))

    def index_copy(self, index: Tensor, rows: "FrameStore") -> "FrameStore":
        """Streams ``index`` replaced by the streams of ``rows`` (same ``keep_every``)."""
        if rows.keep_every != self.keep_every:
            raise LongvidError(f"index_copy: frame stores keep every {self.keep_every} vs {rows.keep_every} frames")
        chunks = list(self.chunks)
        for i, held in zip(index.tolist(), rows.chunks):
            chunks[i] = held
        return dataclasses.replace(self, chunks=tuple(chunks))

    @property
    def ram_nbytes(self) -> int:
        """Bytes of features held in RAM."""
        return sum(c.element_size() * c.numel() for stream in self.chunks for c in stream if isinstance(c, Tensor))

    @property
    def disk_nbytes(self) -> int:
        """Bytes of features in spill files."""
        return sum(c.nbytes for stream in self.chunks for c in stream if isinstance(c, SpilledChunk))

    def stream_features(self, stream: int) -> Tensor:
        """All of one stream's kept features ``(slots, P, D_v)`` (spilled ones read back); ``(0,)`` when none."""
        chunks = self.chunks[stream]
        if not chunks:
            return torch.zeros(0)
        return torch.cat([c if isinstance(c, Tensor) else c[torch.arange(len(c))] for c in chunks])

    def state_dict(self) -> dict[str, Tensor]:
        """``keep_every``, each stream's features (spilled ones included, read into the dict) and
        the storage dtype as an empty tensor of that dtype (when set)."""
        out = {"keep_every": torch.tensor(self.keep_every)}
        out.update({f"stream.{b}": self.stream_features(b) for b in range(self.batch_size)})
        if self.dtype is not None:
            out["dtype"] = torch.zeros(0, dtype=self.dtype)
        return out

    @classmethod
    def from_state_dict(cls, tensors: dict[str, Tensor]) -> "FrameStore":
        """The store of :meth:`state_dict`, in RAM (a store loaded back spills no more)."""
        batch = sum(1 for name in tensors if name.startswith("stream."))
        chunks = tuple((t,) if t.dim() > 1 and len(t) else () for t in (tensors[f"stream.{b}"] for b in range(batch)))
        dtype = tensors["dtype"].dtype if "dtype" in tensors else None
        return cls(chunks, int(tensors["keep_every"]), dtype)
