"""Lay the shared offla19 eval split out in the cross-corpus layouts, with real codec round trips.

    python bench/layout_cross.py OUT [--source /work/shared/data/offla19] [--limit N]

Writes, under OUT (the source is only read):

- ``asv21la/``: ASVspoof 2021 LA layout (``ASVspoof2021_LA_eval/flac``, the trial list, and
  ``keys/LA/CM/trial_metadata.txt``). Each eval trial goes through one channel, in turn: C1 none,
  C2 A-law, C4 G.722, C5 mu-law, C6 **AMR-NB as GSM's stand-in** (FFmpeg has no GSM-FR encoder), C7
  Opus. C3 (PSTN, a real telephone line) is not simulated. Transmission is ``sim_tx`` (``-`` for
  C1). No ASV keys or scores: the LA tables show EER only.
- ``asv21df/``: ASVspoof 2021 DF layout with the 13-column keys: C1 nocodec, C2/C3 MP3 at 24 / 96
  kbit/s, C4/C5 AAC (the M4A conditions) at 24 / 96, C6/C7 Vorbis (Ogg) at 32 / 112, C8 MP3 then
  AAC, C9 Vorbis then AAC; vocoder types assigned to offla19's eval attacks by their engines (below).
- ``itw/release_in_the_wild/``: In-the-Wild layout, ``meta.csv`` (file,speaker,label) and N.wav,
  16 kHz PCM, the speaker's offla19 speaker group as its name.

Every round trip is `extract.avio.round_trip` (FFmpeg through PyAV): encoded, decoded and brought
back to 16 kHz in memory. Phases (2021 layouts): progress, eval, hidden in turn over each class
(1 : 3 : 1). These are offla19's speakers and attacks, **not ASVspoof 2021 or In-the-Wild**: the
layouts let the matrix run; no number is comparable to a published one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extract import avio  # noqa: E402

RATE = 16000
LA_CHANNELS = (("none", None), ("alaw", [("alaw", None)]), ("g722", [("g722", None)]), ("ulaw", [("ulaw", None)]),
               ("gsm", [("amrnb", None)]), ("opus", [("opus", None)]))
"""2021 LA CODEC value -> the round trips that stand for it (gsm: AMR-NB, the stand-in)."""
DF_CHANNELS = (("nocodec", None), ("low_mp3", [("mp3", 24_000)]), ("high_mp3", [("mp3", 96_000)]),
               ("low_m4a", [("aac", 24_000)]), ("high_m4a", [("aac", 96_000)]), ("low_ogg", [("vorbis", 32_000)]),
               ("high_ogg", [("vorbis", 112_000)]), ("mp3m4a", [("mp3", 24_000), ("aac", 24_000)]),
               ("oggm4a", [("vorbis", 32_000), ("aac", 24_000)]))
VOCODERS = {"A07": "traditional_vocoder", "A08": "waveform_concatenation", "A09": "traditional_vocoder",
            "A10": "traditional_vocoder", "A11": "neural_vocoder_nonautoregressive",
            "A12": "neural_vocoder_nonautoregressive", "A13": "traditional_vocoder"}
"""offla19 eval attack -> DF vocoder type: HTS, WORLD, espeak-ng, Griffin-Lim traditional; Pico
concatenative; Piper (VITS) and HiFi-GAN neural non-autoregressive (offla19's README has the engines)."""
PHASES = ("progress", "eval", "eval", "eval", "hidden")


def eval_trials(source: Path, limit: int | None) -> list[dict]:
    """offla19's eval protocol lines with their audio paths and speaker groups."""
    la = source / "LA"
    groups = {}
    with (source / "metadata.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            groups[row["file"]] = row["speaker_group"]
    trials = []
    for line in (la / "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt").read_text().splitlines():
        speaker, utt, _, system, key = line.split()
        trials.append({"speaker": speaker, "utt": utt, "attack": "bonafide" if system == "-" else system, "key": key,
                       "path": la / "ASVspoof2019_LA_eval/flac" / f"{utt}.flac", "group": groups.get(utt, speaker)})
    return trials[:limit] if limit else trials


def channel(wav: np.ndarray, steps) -> np.ndarray:
    for name, bitrate in steps or ():
        wav = avio.round_trip(wav, RATE, name, bitrate)
    return wav


def phases(trials: list[dict]) -> list[str]:
    """progress / eval / hidden in turn (1 : 3 : 1) within each class."""
    seen = {"bonafide": 0, "spoof": 0}
    out = []
    for t in trials:
        out.append(PHASES[seen[t["key"]] % len(PHASES)])
        seen[t["key"]] += 1
    return out


def write_2021(out: Path, track: str, trials: list[dict], audio: list[np.ndarray], channels, key_line) -> None:
    eval_dir = out / f"ASVspoof2021_{track}_eval"
    (eval_dir / "flac").mkdir(parents=True, exist_ok=True)
    keys = out / "keys" / track / "CM"
    keys.mkdir(parents=True, exist_ok=True)
    ids, lines = [], []
    for k, (trial, wav, phase) in enumerate(zip(trials, audio, phases(trials), strict=True)):
        codec, steps = channels[k % len(channels)]
        trial_id = f"{track}_E_{1_000_000 + k:07d}"
        sf.write(eval_dir / "flac" / f"{trial_id}.flac", channel(wav, steps), RATE, subtype="PCM_16")
        ids.append(trial_id)
        lines.append(key_line(trial, trial_id, codec, phase))
    (eval_dir / f"ASVspoof2021.{track}.cm.eval.trl.txt").write_text("".join(f"{i}\n" for i in ids))
    (keys / "trial_metadata.txt").write_text("".join(f"{line}\n" for line in lines))


def la_line(t: dict, trial_id: str, codec: str, phase: str) -> str:
    transmission = "-" if codec == "none" else "sim_tx"
    return f"{t['speaker']} {trial_id} {codec} {transmission} {t['attack']} {t['key']} notrim {phase}"


def df_line(t: dict, trial_id: str, codec: str, phase: str) -> str:
    bona = t["key"] == "bonafide"
    attack = "-" if bona else t["attack"]
    vocoder = "bonafide" if bona else VOCODERS.get(t["attack"], "unknown")
    return f"{t['speaker']} {trial_id} {codec} asvspoof {attack} {t['key']} notrim {phase} {vocoder} - - - -"


def write_itw(out: Path, trials: list[dict], audio: list[np.ndarray]) -> None:
    folder = out / "release_in_the_wild"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "meta.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "speaker", "label"])
        for k, (t, wav) in enumerate(zip(trials, audio, strict=True)):
            sf.write(folder / f"{k}.wav", wav, RATE, subtype="PCM_16")
            writer.writerow([f"{k}.wav", t["group"].replace("_", " "), "bona-fide" if t["key"] == "bonafide" else "spoof"])


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/offla19"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N eval trials")
    args = parser.parse_args()
    for name, _ in (*[s for _, steps in LA_CHANNELS + DF_CHANNELS for s in steps or ()],):
        avio.check(name)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty; choose an empty folder")
    trials = eval_trials(args.source, args.limit)
    started = time.perf_counter()
    audio = []
    for t in trials:
        wav, rate = sf.read(t["path"], dtype="float32")
        if rate != RATE:
            raise SystemExit(f"{t['path']}: {rate} Hz, expected {RATE}")
        audio.append(wav)
    report = {"source": str(args.source), "trials": len(trials)}
    for name, write in (("asv21la", lambda o: write_2021(o, "LA", trials, audio, LA_CHANNELS, la_line)),
                        ("asv21df", lambda o: write_2021(o, "DF", trials, audio, DF_CHANNELS, df_line)),
                        ("itw", lambda o: write_itw(o, trials, audio))):
        start = time.perf_counter()
        write(args.out / name)
        report[name] = {"seconds": round(time.perf_counter() - start, 1), "bytes": size(args.out / name)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "layout.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
