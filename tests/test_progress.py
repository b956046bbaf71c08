import io

from longvid.progress import PlainProgress, progress


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    bar = progress(total=3, desc="train", unit="step", file=out, interval=0.0)
    assert isinstance(bar, PlainProgress)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train: 1/3 step")
    assert lines[-1].startswith("train: 3/3 step")


def test_plain_lines_are_rate_limited_and_closed_once():
    out = io.StringIO()
    bar = progress(total=None, desc="eval", unit="clip", file=out, interval=3600.0)
    for _ in range(100):
        bar.update(1)
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == [line for line in out.getvalue().splitlines() if line.startswith("eval: 100 clip")]
    assert len(out.getvalue().splitlines()) == 1


def test_disabled_is_none():
    assert progress(enabled=False) is None
