import os

import pytest
import torch

from longvid.errors import LongvidError
from longvid.core.llm import CausalLM
from longvid.malmm import MALMM, get_config
from longvid.core.tiny import save_tiny_llm
from longvid.engine import checkpoint as ckpt
from longvid.engine.config import TrainConfig
from longvid.malmm.qa import QAExample, QATrainer, epoch_order, stack_examples

torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return CausalLM.from_pretrained(save_tiny_llm(str(tmp_path_factory.mktemp("llm")), init_std=0.5))


def examples(count=8, frames=3):
    """The answer is the colour given by the sign of the first frame's tokens."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        tokens = torch.randn(frames, 10, 48, generator=generator)
        sign = 1.0 if i % 2 else -1.0
        tokens[0] = tokens[0].abs() * sign
        out.append(QAExample(tokens, "what color is the circle", "red" if sign > 0 else "blue"))
    return out


def model(llm, seed=0):
    torch.manual_seed(seed)
    return MALMM(get_config("malmm_tiny", llm_hidden=32), llm=llm)


def config(tmp_path, **fields):
    base = dict(batch_size=4, epochs=6, lr=5e-3, warmup_steps=2, weight_decay=0.0, log_every=100, out_dir=str(tmp_path))
    return TrainConfig(**{**base, **fields})


def test_qa_loss_falls_and_only_the_qformer_side_trains(llm, tmp_path):
    net = model(llm)
    frozen = {k: v.clone() for k, v in llm.state_dict().items()}
    queries = net.qformer.query_tokens.detach().clone()
    history = QATrainer(net, config(tmp_path), examples(), log=None).fit()
    losses = [r["loss"] for r in history]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    assert all(torch.equal(v, llm.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(queries, net.qformer.query_tokens)
    assert ckpt.list_checkpoints(str(tmp_path))[-1].endswith("step_00000012")


def test_resume_continues_the_same_run(llm, tmp_path):
    full = QATrainer(model(llm), config(tmp_path, epochs=3, checkpoint_every=3), examples(), log=None).fit()
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == ["step_00000003", "step_00000006"]
    for ext in (".json", ".safetensors"):
        os.remove(os.path.join(tmp_path, "step_00000006" + ext))
    resumed = QATrainer(model(llm, seed=1), config(tmp_path, epochs=3, checkpoint_every=3), examples(), log=None).fit(resume=True)
    assert [r["step"] for r in resumed] == [4, 5, 6]
    torch.testing.assert_close([r["loss"] for r in resumed], [r["loss"] for r in full[3:]], rtol=1e-5, atol=1e-6)


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1)
    assert sorted(epoch_order(10, 0, 1)) == list(range(10))
    assert epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    assert epoch_order(5, 3, 7, shuffle=False) == [0, 1, 2, 3, 4]


def test_user_mistakes(llm, tmp_path):
    with pytest.raises(LongvidError, match="no training examples"):
        QATrainer(model(llm), config(tmp_path), [], log=None)
    with pytest.raises(LongvidError, match="same frame shape"):
        stack_examples([examples(1, frames=3)[0], examples(1, frames=2)[0]])
    frozen = model(llm).requires_grad_(False)
    with pytest.raises(LongvidError, match="no trainable parameters"):
        QATrainer(frozen, config(tmp_path), examples(), log=None)
    ckpt.save_checkpoint(str(tmp_path / "other"), 1, {"x": torch.zeros(1)}, {"step": 1})
    with pytest.raises(LongvidError, match="not a QA training checkpoint"):
        QATrainer(model(llm), config(tmp_path), examples(), log=None).load(str(tmp_path / "other"))
