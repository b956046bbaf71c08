"""Does ``longvid train rewind_tiny stage=grounding`` learn from files? Generated Charades-STA data.

Writes videos (noise, and a red square shown for 3-6 s at a random time) with a
Charades-STA train and test file (``<id> <start> <end>##a red square is shown``), then, for
each seed, runs the same path as ``longvid train`` / ``longvid eval`` (decoding at 1 fps,
cached features, the training core) and prints R@0.5 and mIoU on the held-out videos for:
the untrained model (its weights saved before any step), the trained model, and a fixed
centred interval of the mean training length. Mean and worst over the seeds.

    python benchmarks/rewind_files_grounding.py [--seeds 0,1,2] [--steps 150] [--train 48] [--test 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

SECONDS, FPS = 16, 2


def write_data(folder: str, count: int, rng: np.random.Generator, name: str) -> tuple[str, list[tuple[float, float]]]:
    """``count`` videos under ``folder/videos`` and their Charades-STA file; returns it and the targets."""
    from longvid.video import write_video

    os.makedirs(os.path.join(folder, "videos"), exist_ok=True)
    lines, targets = [], []
    for i in range(count):
        length = int(rng.integers(3, 7))
        start = int(rng.integers(0, SECONDS - length + 1))
        frames = rng.integers(0, 90, (SECONDS * FPS, 32, 40, 3)).astype(np.uint8)
        shown = slice(start * FPS, (start + length) * FPS)
        frames[shown, 8:24, 10:30] = (230, 20, 20)
        video_id = f"{name}{i:03d}"
        write_video(os.path.join(folder, "videos", f"{video_id}.mp4"), iter(frames), fps=FPS)
        lines.append(f"{video_id} {start:.1f} {start + length:.1f}##a red square is shown.\n")
        targets.append((float(start), float(start + length)))
    path = os.path.join(folder, f"charades_sta_{name}.txt")
    with open(path, "w") as f:
        f.writelines(lines)
    return path, targets


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict]:
    from longvid.eval.metrics import grounding_metrics
    from longvid.rewind.weights import save_weights
    from longvid.rewind import run as rewind_run

    folder = tempfile.mkdtemp(prefix=f"rewind-files-{seed}-")
    rng = np.random.default_rng(seed)
    train_file, train_targets = write_data(folder, args.train, rng, "train")
    test_file, test_targets = write_data(folder, args.test, rng, "test")
    common = [f"video_root={os.path.join(folder, 'videos')}", f"model_seed={seed}", f"seed={seed}",
              f"feature_cache={os.path.join(folder, 'features')}"]
    untrained = os.path.join(folder, "untrained")
    model, _ = rewind_run.build_run_model(rewind_run.load_run_config("rewind_tiny", [f"model_seed={seed}"]))
    save_weights(model, os.path.join(untrained, "rewind.safetensors"), "rewind_tiny", seed=seed, stages=[])
    rows = {"untrained": rewind_run.evaluate("rewind_tiny", [f"val_data={test_file}", f"out_dir={untrained}", *common], progress=False)}
    trained = os.path.join(folder, "trained")
    rewind_run.train("rewind_tiny", ["stage=grounding", f"data={train_file}", f"max_steps={args.steps}", "batch_size=4",
                                     "checkpoint_every=100000", f"out_dir={trained}", *common], progress=False)
    rows["trained"] = rewind_run.evaluate("rewind_tiny", [f"val_data={test_file}", f"out_dir={trained}", *common], progress=False)
    length = sum(e - s for s, e in train_targets) / len(train_targets)
    middle = torch.tensor([[(SECONDS - length) / 2, (SECONDS + length) / 2]] * len(test_targets), dtype=torch.float64)
    rows["centred interval"] = grounding_metrics(middle, torch.tensor(test_targets, dtype=torch.float64))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run_seed(seed, args) for seed in seeds]
    print(f"| model | R@0.5 mean | R@0.5 worst | mIoU mean | mIoU worst | mIoU by seed ({','.join(map(str, seeds))}) |")
    print("|---|---|---|---|---|---|")
    for name in runs[0]:
        r5 = [run[name]["R@0.5"] for run in runs]
        miou = [run[name]["mIoU"] for run in runs]
        print(f"| {name} | {np.mean(r5):.1f} | {min(r5):.1f} | {np.mean(miou):.1f} | {min(miou):.1f} | "
              f"{' / '.join(f'{m:.1f}' for m in miou)} |")


if __name__ == "__main__":
    main()
