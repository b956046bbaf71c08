import pytest
import torch

from longvid.errors import LongvidError
from longvid.core.encoders import FeatureCache, FrozenImageEncoder
from longvid.core.tiny import save_tiny_vision

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine


@pytest.mark.parametrize("arch, tokens", [("clip", 17), ("siglip", 16)])  # CLIP adds a CLS token
def test_tiny_vision_towers_return_all_tokens(tmp_path, arch, tokens):
    folder = save_tiny_vision(str(tmp_path / arch), arch=arch, image_size=32, patch=8, hidden=48)
    encoder = FrozenImageEncoder.from_pretrained(folder)
    frames = torch.rand(5, 3, 40, 50)
    out = encoder.encode_frames(frames, batch_size=2)
    assert out.shape == (5, tokens, 48) and encoder.width == 48
    assert not any(p.requires_grad for p in encoder.parameters())
    # batching does not change the result, and the normalisation comes from the folder's preprocessor config
    torch.testing.assert_close(out[3:4], encoder.encode_frames(frames[3:4]), rtol=0, atol=1e-5)
    assert encoder.mean == (0.5, 0.5, 0.5)
    penultimate = FrozenImageEncoder.from_pretrained(folder, layer=-2).encode_frames(frames[:1])
    assert penultimate.shape == (1, tokens, 48) and not torch.allclose(penultimate, out[:1])


def test_feature_cache(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(video, "enc", "fps=1")
    assert key != cache.key(video, "enc", "fps=2")
    calls = []
    compute = lambda: calls.append(1) or torch.arange(6.0).view(2, 3)
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    assert len(calls) == 1 and torch.equal(first, second)
    with pytest.raises(LongvidError, match="cannot read video"):
        cache.key(tmp_path / "missing.mp4", "enc", "")
