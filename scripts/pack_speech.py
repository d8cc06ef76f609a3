"""Pack a speech folder (python -m arrowdiff.speech.build_data) for a GPU machine reached through a size-
limited transfer: the first N training utterances' mels/phones/durations (utterances are interleaved over
speakers, so any prefix is balanced), the first M training utterances' waveforms (vocoder training) and
the full val split, as xz-compressed files.

    python scripts/pack_speech.py --data data/speech --out .carry/speech --train 3000
    python scripts/pack_speech.py --data data/speech --out .carry/vocoder --train 400 --waves

Unpack with `xz -d` (scripts/gpu_finetune_session.sh and scripts/gpu_vocoder_session.sh do it).
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def write_xz(path: Path, array: np.ndarray) -> int:
    with lzma.open(path.with_name(path.name + ".xz"), "wb", preset=9) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return path.with_name(path.name + ".xz").stat().st_size


def pack(data: Path, out: Path, n_train: int, waves: bool, n_val: int | None = None) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for split, n in (("train", n_train), ("val", n_val)):
        table = pq.read_table(data / f"{split}_utts.parquet")
        n = len(table) if n is None else min(n, len(table))
        rows = table.slice(0, n)
        pq.write_table(rows, out / f"{split}_utts.parquet")
        last = {k: rows.column(k).to_pylist()[-1] for k in rows.column_names}
        ends = {
            "mel": last["mel_offset"] + last["n_frames"],
            "phones": last["phone_offset"] + last["n_phones"],
            "durations": last["phone_offset"] + last["n_phones"],
            "wave": last["wave_offset"] + last["n_samples"],
        }
        kinds = ("wave",) if waves else ("mel", "phones", "durations")
        for kind in kinds:
            arr = np.load(data / f"{split}_{kind}.npy", mmap_mode="r", allow_pickle=False)[: ends[kind]]
            sizes[f"{split}_{kind}.npy.xz"] = write_xz(out / f"{split}_{kind}.npy", arr)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["packed"] = {"train_utterances": n_train, "waves": waves, "source": str(data)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if (data / "README").exists():
        shutil.copyfile(data / "README", out / "README")
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/speech")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, required=True, help="first N training utterances")
    p.add_argument("--val", type=int, default=None, help="first N validation utterances (default: all)")
    p.add_argument("--waves", action="store_true", help="pack waveforms (vocoder) instead of mels")
    a = p.parse_args()
    sizes = pack(Path(a.data), Path(a.out), a.train, a.waves, a.val)
    print(json.dumps(sizes, indent=1), sum(sizes.values()) / 1e6, "MB")


if __name__ == "__main__":
    main()
