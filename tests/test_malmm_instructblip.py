"""MA-LMM from a transformers InstructBLIP checkpoint, and released LAVIS-named weights on top."""

from __future__ import annotations

import json
import os

import pytest
import torch

import longvid
from longvid.errors import LongvidError
from longvid.malmm.instructblip import lavis_name
from longvid.core.tiny import tiny_llm_model, tiny_tokenizer

QUERIES = 8


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    """A tiny random InstructBLIP (vision 48 wide, Q-Former 4 x 64, LLaMA 32 wide) saved as transformers saves one."""
    from transformers import (InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipQFormerConfig,
                              InstructBlipVisionConfig)

    folder = str(tmp_path_factory.mktemp("instructblip"))
    vision = InstructBlipVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                      image_size=32, patch_size=8, layer_norm_eps=1e-6)
    qformer = InstructBlipQFormerConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                                        cross_attention_frequency=2, encoder_hidden_size=48, vocab_size=128,
                                        max_position_embeddings=64)
    text = tiny_llm_model().config
    config = InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                                num_query_tokens=QUERIES)
    torch.manual_seed(0)
    blip = InstructBlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # no zero / one initialisations left: a mis-mapped tensor shows
        for tensor in blip.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)
    blip.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(os.path.join(folder, "qformer_tokenizer"))
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "BlipImageProcessor", "size": {"height": 32, "width": 32},
                   "image_mean": [0.4, 0.45, 0.5], "image_std": [0.25, 0.3, 0.35]}, f)
    return folder, blip


def test_one_frame_equals_instructblip(instructblip):
    folder, blip = instructblip
    model = longvid.build_model("malmm", pretrained=folder).eval()
    assert model.encoder.image_size == 32 and model.encoder.mean == (0.4, 0.45, 0.5) and model.encoder.std == (0.25, 0.3, 0.35)
    assert model.config.qformer.memory_bank_length == 10 and model.config.llm_hidden == 32
    loaded = len(model.trainable_state_dict()) - 1  # all but image_pe, which InstructBLIP lacks (it stays zero)
    assert [r.split(": ", 1)[1] for r in model.weight_reports] == [f"loaded {loaded} tensors; missing 1 (image_pe.weight); unexpected 0"]
    assert not model.image_pe.weight.any()
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 32, 32)
    questions = ["what is shown in the video", "who is moving left"]
    ids, mask = model.tokenize_instructions(questions)
    with torch.no_grad():
        expected = blip.get_image_features(pixel_values=pixels, qformer_input_ids=ids, qformer_attention_mask=mask.long()).pooler_output
        state = model.init_state(2, instructions=questions)
        _, state = model.step_tokens(model.encoder(pixels)[:, None], state)  # one frame per stream
        prefix = model.visual_prefix(state)  # (2, Q, D)
    assert prefix.shape == expected.shape == (2, QUERIES, 32)
    torch.testing.assert_close(prefix, expected, atol=1e-5, rtol=0)
    assert model.llm.model is blip.language_model or model.llm.hidden_size == 32  # the checkpoint's LLM, frozen
    assert not any(p.requires_grad for p in model.llm.parameters()) and not any(p.requires_grad for p in model.encoder.parameters())


def test_float16_frozen_parts_leave_the_trainable_weights_as_stored(instructblip):
    folder, blip = instructblip
    model = longvid.build_model("malmm", pretrained=folder, dtype=torch.float16)
    assert next(model.llm.parameters()).dtype == next(model.encoder.parameters()).dtype == torch.float16
    assert model.qformer.query_tokens.dtype == torch.float32
    stored = blip.state_dict()
    torch.testing.assert_close(model.qformer.layers[0].crossattention.self.key.weight,
                               stored["qformer.encoder.layer.0.crossattention.attention.key.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.llm_proj.weight, stored["language_projection.weight"], rtol=0, atol=0)


def test_lavis_checkpoint_loads_on_top_with_a_report(instructblip, tmp_path):
    """A LAVIS-named MA-LMM .pth (as MA-LMM's trainer saves it: {"model": ...}) replaces the trainable weights."""
    folder, blip = instructblip
    torch.manual_seed(2)
    lavis = {}
    for name, tensor in blip.state_dict().items():
        target = lavis_name(name)
        if target is not None:
            lavis[target] = torch.randn_like(tensor.float())
    lavis["image_pe.weight"] = torch.randn(120, 48)
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(64)[None]
    lavis["Qformer.cls.predictions.bias"] = torch.zeros(128)  # the MLM head LAVIS drops: unexpected
    del lavis["llm_proj.bias"]
    path = tmp_path / "malmm_lvu.pth"
    torch.save({"model": lavis, "epoch": 3}, path)
    model = longvid.build_model("malmm", pretrained=folder, checkpoint=str(path))
    loaded = len(model.trainable_state_dict()) - 1
    assert model.weight_reports[1] == (f"{path}: loaded {loaded} tensors; missing 1 (llm_proj.bias); "
                                       "unexpected 1 (Qformer.cls.predictions.bias)")
    weights = model.state_dict()
    torch.testing.assert_close(weights["image_pe.weight"], lavis["image_pe.weight"])
    torch.testing.assert_close(weights["qformer.layers.2.crossattention.self.key.weight"],
                               lavis["Qformer.bert.encoder.layer.2.crossattention.self.key.weight"])
    torch.testing.assert_close(weights["qformer.embeddings.LayerNorm.bias"], lavis["Qformer.bert.embeddings.LayerNorm.bias"])
    torch.testing.assert_close(weights["llm_proj.bias"], blip.state_dict()["language_projection.bias"])  # kept from InstructBLIP
    lavis["llm_proj.weight"] = torch.zeros(5, 5)
    torch.save({"model": lavis}, path)
    with pytest.raises(LongvidError, match=r"llm_proj.weight is \(5, 5\) in the checkpoint but \(32, 64\)"):
        longvid.build_model("malmm", pretrained=folder, checkpoint=str(path))


def test_released_key_names_map_to_the_model(instructblip):
    """Every name of MA-LMM's released Q-Former layout (reference/malmm_qformer_keys.tsv) has a place in a
    full-size MA-LMM, with the shape the file gives."""
    from longvid.malmm.instructblip import _our_name
    from longvid.malmm import MALMM, get_config

    keys = "/work/shared/reference/malmm_qformer_keys.tsv"
    if not os.path.exists(keys):
        pytest.skip("reference key list not available")
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in MALMM(get_config("malmm")).trainable_state_dict().items()}
    rows = [line.rstrip("\n").split("\t") for line in open(keys)][1:]
    for name, shape in rows:
        if name.endswith("position_ids"):
            continue
        assert ours[_our_name(name)] == tuple(int(s) for s in shape.split("x")), name
    assert len(rows) - 1 == len(ours)  # every trainable tensor is named in the released layout


def test_runs_start_from_instructblip_and_lavis_weights(instructblip, tmp_path, monkeypatch, capsys):
    """``pretrained=`` / ``weights=`` through a run preset: the reports are printed, the run evaluates."""
    import numpy as np

    from longvid.malmm import run as malmm_run
    from longvid.video import write_video

    folder, blip = instructblip
    monkeypatch.chdir(tmp_path)
    os.makedirs("videos")
    write_video("videos/9t8iEpdabms.mp4", (np.full((32, 48, 3), 5 * i, np.uint8) for i in range(40)), fps=10)
    with open("val.json", "w") as f:
        json.dump({"9t8iEpdabms": {"subset": "val", "duration": 4, "num_frames": 40, "genre": "drama", "genre_answer": "(a)"}}, f)
    lavis = {target: tensor for name, tensor in blip.state_dict().items() if (target := lavis_name(name)) is not None}
    torch.save({"model": {**lavis, "image_pe.weight": torch.randn(16, 48)}}, "malmm.pth")
    metrics = malmm_run.evaluate("malmm_tiny_lvu", ["val_data=val.json", "video_root=videos", "out_dir=R",
                                                    f"pretrained={folder}", "weights=malmm.pth"], progress=False)  # fmt: skip
    printed = capsys.readouterr().out
    assert f"{folder}: loaded" in printed and "malmm.pth: loaded" in printed and "missing 0; unexpected 0" in printed
    assert set(metrics) == {"genre", "mean", "genre_top5", "mean_top5"}  # top-5: the class names ranked by likelihood
