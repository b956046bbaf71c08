"""MA-LMM's metrics on generated answer text, as its tasks compute them.

- classification (LVU, Breakfast, COIN): top-1 = the generated text equals the label text
  (both normalised), per group (an LVU task) and the mean over groups;
- open-ended QA (MSRVTT-QA, MSVD-QA, ActivityNet-QA): exact match after the same
  normalisation; for MSRVTT/MSVD only the prediction's first word counts (MA-LMM's rule);
- captions (YouCook2, MSRVTT, MSVD): the COCO caption metrics of ``pycocoevalcap`` (CIDEr, BLEU-4, ROUGE-L;
  METEOR when Java runs), never re-implemented here.

Accuracies are percentages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from longvid.errors import LongvidError


def normalize_answer(text: str) -> str:
    """Lower case, ``.!"()*#:;~`` removed, whitespace collapsed (MA-LMM's ``blip_question`` processing)."""
    from longvid.malmm.datasets import process_question

    return process_question(text)


def first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def answer_correct(prediction: str, answer: str, first_word_only: bool = False) -> bool:
    """Exact match of normalised texts (``first_word_only``: the prediction's first word)."""
    predicted = normalize_answer(prediction)
    return (first_word(predicted) if first_word_only else predicted) == normalize_answer(answer)


def grouped_accuracy(groups: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy (%) per group, and ``mean`` over groups when there are several."""
    if len(groups) != len(correct) or not groups:
        raise LongvidError("accuracy needs one correctness flag per sample, and at least one sample")
    hits, counts = defaultdict(int), defaultdict(int)
    for group, ok in zip(groups, correct):
        hits[group] += bool(ok)
        counts[group] += 1
    result = {group: 100.0 * hits[group] / counts[group] for group in sorted(counts)}
    if len(result) > 1:
        result["mean"] = sum(result.values()) / len(result)
    return result


def check_caption_metrics() -> None:
    """An error unless the caption metrics can run (pycocoevalcap installed, Java on PATH): runs check
    it before any compute."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pycocoevalcap") is None:
        raise LongvidError("caption metrics need pycocoevalcap: pip install 'longvid[caption]'")
    if shutil.which("java") is None:
        raise LongvidError("caption metrics need Java (pycocoevalcap's tokenizer and METEOR are Java programs): install a JRE")


def caption_metrics(predictions: dict[str, str], references: dict[str, Sequence[str]], meteor: bool = True) -> dict[str, float]:
    """COCO caption metrics (pycocoevalcap) of ``predictions`` (id -> caption) against ``references``
    (id -> captions), tokenised with its PTB tokenizer (Java): CIDEr, BLEU-4, ROUGE-L and, with
    ``meteor``, METEOR."""
    check_caption_metrics()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = sorted(predictions)
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in ids})
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    metrics = {"CIDEr": 100.0 * cider, "BLEU-4": 100.0 * bleu[3], "ROUGE-L": 100.0 * rouge}
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()  # a Java process; its stdout/stderr pipes are closed here (pycocoevalcap leaves them open)
        try:
            metrics["METEOR"] = 100.0 * scorer.compute_score(gts, res)[0]
        finally:
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
            scorer.meteor_p.stdout.close()
            scorer.meteor_p.stderr.close()
    return metrics
