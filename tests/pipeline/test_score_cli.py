"""`pipeline score` and `pipeline export-model` through click's test runner: a folder scored as
`evaluate` scores the separately extracted eval store, formats, stdin, thresholds, explanations,
bad input, and a folder whose files are still being written."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from classify.detector import Detector
from classify.evaluate import evaluate
from classify.scorefiles import read_scores
from pipeline.commands import score as score_module
from pipeline.commands.export_model import command as export_command
from pipeline.commands.score import command as score_command
from store.reader import FeatureStore
from tests.scoring import quiet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args, stdin: str | None = None):
    return CliRunner().invoke(score_command, [str(a) for a in args], input=stdin)


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_folder_is_scored_as_evaluate_scores_the_separate_eval_store(scoring, tmp_path):
    """The workflow: a run trained on a train+dev store scores the eval folder; scores and calibrated
    LLRs equal `evaluate` on the eval store extracted on its own (which has no dev split)."""
    folder = Path(scoring.files("eval")[0]).parent
    out = tmp_path / "scores.csv"
    result = run("--model", scoring.run, folder, "--out", out, "--batch-seconds", 0)
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in rows_of(out.read_text())}
    store = FeatureStore(scoring.eval_store)
    assert sorted(store.utterances["split"].unique()) == ["eval"]
    metrics = evaluate(scoring.run, store, "eval", tmp_path / "eval", log=quiet)
    path_of = store.utterances.set_index("utt_id")["path"]
    for name, column in (("scores.txt", "score"), ("scores_calibrated.txt", "llr")):
        expected = read_scores(tmp_path / "eval" / name)
        got = [float(rows[path_of[u]][column]) for u in expected.utt_ids]
        assert got == pytest.approx(expected.scores.tolist(), rel=1e-6, abs=1e-4), column
    assert len(rows) == len(scoring.files("eval")) and all(r["error"] == "" for r in rows.values())
    trained = FeatureStore(scoring.traindev).codec  # the model's codec (the eval store has its sha256)
    assert trained.weights_sha256 == store.codec.weights_sha256
    assert {r["codec_weights"] for r in rows.values()} == {trained.weights_label}
    assert {r["decision"] for r in rows.values()} <= {"bonafide", "spoof"}
    meta = json.loads((tmp_path / "scores.csv.meta.json").read_text())
    assert meta["codec_weights"]["sha256"] == store.codec.weights_sha256 and meta["failed"] == 0
    assert meta["calibration"]["calibration"]["coef"] == metrics["calibration"]["coef"]
    assert "dev EER threshold of the calibrated score" in meta["threshold"]
    assert set(meta["timings_seconds"]) == {"decode", "codec", "head"}


def test_stdin_jsonl_and_a_bad_file_exit_1_with_every_row(scoring, tmp_path):
    good = scoring.files("dev")[:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVE")
    out = tmp_path / "rows.jsonl"
    result = run("--model", scoring.run, "-", "--out", out, stdin="\n".join([good[0], str(bad), good[1]]) + "\n")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [good[0], str(bad), good[1]]
    assert rows[1]["score"] is None and "not a readable audio file" in rows[1]["error"]
    assert all(isinstance(rows[k]["score"], float) and rows[k]["error"] == "" for k in (0, 2))
    assert f"{bad}: not a readable audio file" in result.output and "2 file(s) scored, 1 failed" in result.output


def test_asvspoof_format_table_and_raw_thresholds(scoring, tmp_path):
    files = scoring.files("eval")[:3]
    result = run("--model", scoring.run, *files, "--out", tmp_path / "scores.tsv")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "scores.tsv").read_text().splitlines()
    assert lines[0] == "filename\tcm-score" and [line.split("\t")[0] for line in lines[1:]] == [Path(f).stem for f in files]
    scores = read_scores(tmp_path / "scores.tsv")
    table = run("--model", scoring.run, *files, "--threshold", float(np.median(scores.scores)))
    assert table.exit_code == 0, table.output
    assert "# codec weights: UNTRAINED EnCodec 24 kHz" in table.output
    decisions = [line.split()[2] for line in table.output.splitlines() if line.rstrip().endswith(".flac")]
    assert decisions == ["bonafide" if s >= np.median(scores.scores) else "spoof" for s in scores.scores]
    assert "decision: raw score >=" in table.output
    bad = run("--model", scoring.run, *files, "--threshold", "median")
    assert bad.exit_code == 1 and "use eer, bayes or a number" in bad.output


def test_explain_prints_levels_and_plots(scoring, tmp_path):
    path = scoring.files("eval")[0]
    result = run("--model", scoring.run, "--explain", path, "--plot", tmp_path / "why.png")
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("  level ") for line in result.output.splitlines()) == 8
    assert "over time:" in result.output and (tmp_path / "why.png").stat().st_size > 10_000


def test_input_errors_are_named(scoring, tmp_path):
    assert run("--model", scoring.run).exit_code == 2
    assert "--plot goes with --explain" in run("--model", scoring.run, "x.wav", "--plot", tmp_path / "p.png").output
    (tmp_path / "junk.pt").write_bytes(b"junk")
    result = run("--model", tmp_path / "junk.pt", "x.wav")
    assert result.exit_code == 1 and "junk.pt: not a readable checkpoint" in result.output


def test_export_model_then_score_with_the_bundle(scoring, tmp_path):
    bundle = tmp_path / "detector.pt"
    exported = CliRunner().invoke(export_command, [str(scoring.run), "--out", str(bundle)])
    assert exported.exit_code == 0, exported.output
    assert "codec weights embedded from the training store's" in exported.output
    files = scoring.files("dev")[:2]
    a = run("--model", scoring.run, *files, "--out", tmp_path / "a.csv")
    b = run("--model", bundle, *files, "--out", tmp_path / "b.csv")
    assert a.exit_code == b.exit_code == 0
    assert [r["score"] for r in rows_of((tmp_path / "a.csv").read_text())] == \
           [r["score"] for r in rows_of((tmp_path / "b.csv").read_text())]
    again = CliRunner().invoke(export_command, [str(bundle), "--out", str(tmp_path / "again.pt")])
    assert again.exit_code == 1 and "already a detector bundle" in again.output


def write_while_scoring(scoring, folder: Path, n_files: int, seconds: float, pause: float,
                        monkeypatch) -> tuple[object, list[str], dict]:
    """Score ``folder`` while a thread writes ``n_files`` audio files of ``seconds`` into it (WAV and
    FLAC in turn, the same samples): half of them before scoring starts; the other half are all begun
    (their first 512 bytes) before scoring starts, then, once `score` has listed the folder, finished
    one by one, ``pause`` seconds apart, while scoring goes on: they are listed partial, and opened
    partial or whole. Returns the command's result,
    the files written, and the whole file's (score, duration) by suffix (the Detector on a copy)."""
    data, rate = sf.read(scoring.files("eval")[0], dtype="float32", frames=int(seconds * 16000))
    blobs = {}
    for fmt in ("WAV", "FLAC"):
        buf = io.BytesIO()
        sf.write(buf, data, rate, format=fmt, subtype="PCM_16")
        blobs[f".{fmt.lower()}"] = buf.getvalue()
    folder.mkdir()
    whole = folder.parent / "whole"
    whole.mkdir()
    for suffix, blob in blobs.items():
        (whole / f"whole{suffix}").write_bytes(blob)
    expected = {Path(r.path).suffix: (r.score, r.duration)
                for r in Detector.load(scoring.run, batch_seconds=0).score_files(sorted(map(str, whole.iterdir())))}
    names = [f"f{k:04d}{'.wav' if k % 2 == 0 else '.flac'}" for k in range(n_files)]
    written: list[str] = []
    for name in names[: n_files // 2]:
        (folder / name).write_bytes(blobs[Path(name).suffix])
        written.append(str(folder / name))
    started, listed = threading.Event(), threading.Event()

    listing = score_module.find_audio

    def find_audio(where):  # `score`'s listing of the folder, then a signal to the writer
        found = list(listing(where))
        listed.set()
        return iter(found)

    monkeypatch.setattr(score_module, "find_audio", find_audio)

    def writer() -> None:
        handles = {name: (folder / name).open("wb") for name in names[n_files // 2 :]}
        for name, handle in handles.items():
            handle.write(blobs[Path(name).suffix][:512])
            handle.flush()
        started.set()
        listed.wait(timeout=120)
        for name, handle in handles.items():
            time.sleep(pause)
            blob = blobs[Path(name).suffix]
            for first in range(512, len(blob), 512):
                handle.write(blob[first : first + 512])
                handle.flush()
            handle.close()
            written.append(str(folder / name))

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait()
    result = run("--model", scoring.run, folder, "--out", folder.parent / "rows.csv", "--batch-seconds", 0)
    thread.join()
    return result, written, expected


def check_rows(result, folder: Path, expected: dict) -> list[dict[str, str]]:
    """Never a crash; every row is the whole file's score (the file as it was when opened: a partial
    WAV or FLAC says in its header how long it will be, so a partial one is reported truncated) or an
    error naming why the file could not be read."""
    assert result.exit_code in (0, 1), result.output  # never a crash
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = rows_of((folder.parent / "rows.csv").read_text())
    for row in rows:
        assert (row["score"] != "") != (row["error"] != ""), row  # scored, or reported as unreadable
        if row["score"]:
            score, duration = expected[Path(row["path"]).suffix]
            assert float(row["score"]) == pytest.approx(score, abs=1e-4), row
            assert float(row["duration"]) == pytest.approx(duration), row
        else:
            assert "Traceback" not in row["error"] and len(row["error"]) > 10, row
    scored = sum(r["score"] != "" for r in rows)
    print(f"{len(rows)} files listed while being written: {scored} scored whole, {len(rows) - scored} reported "
          f"unreadable ({sorted({r['error'].split('(')[0].split(':')[0] for r in rows if r['error']})})")
    return rows


def test_a_folder_being_written_is_scored_or_reported_file_by_file(scoring, tmp_path, capsys, monkeypatch):
    result, _, expected = write_while_scoring(scoring, tmp_path / "incoming", n_files=12, seconds=0.3, pause=0.5,
                                              monkeypatch=monkeypatch)
    rows = check_rows(result, tmp_path / "incoming", expected)
    assert len(rows) == 12 and sum(r["error"] == "" for r in rows) >= 6  # those there from the start are scored
    with capsys.disabled():
        print(capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.soak
def test_a_folder_of_1000_files_being_written(scoring, tmp_path, capsys, monkeypatch):
    result, written, expected = write_while_scoring(scoring, tmp_path / "incoming", n_files=1000, seconds=0.1,
                                                    pause=1.0, monkeypatch=monkeypatch)
    rows = check_rows(result, tmp_path / "incoming", expected)
    assert len(rows) == 1000 and sum(r["error"] == "" for r in rows) >= 500
    assert {r["path"] for r in rows} == set(written)
    with capsys.disabled():
        print(capsys.readouterr().out)


def test_a_folder_of_m4a_webm_and_video_files_is_scored(scoring, tmp_path):
    """Every format FFmpeg reads is found in a folder and scored; each score equals the Detector's
    score of the waveform PyAV decodes (an independent decode); a cut M4A is reported truncated."""
    from extract import avio
    from tests.media import write

    data, rate = sf.read(scoring.files("eval")[0], dtype="float32")
    folder = tmp_path / "formats"
    folder.mkdir()
    sf.write(folder / "a.flac", data, rate)
    for name, video in (("a.m4a", False), ("a.webm", False), ("a.mp4", True)):
        write(folder / name, data, rate, video=video)
    blob = (folder / "a.m4a").read_bytes()
    (folder / "cut.m4a").write_bytes(blob[: len(blob) // 2])
    out = tmp_path / "rows.jsonl"
    result = run("--model", scoring.run, folder, "--out", out, "--batch-seconds", 0)
    assert result.exit_code == 1, result.output  # the cut file
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"a.flac", "a.m4a", "a.webm", "a.mp4", "cut.m4a"}
    assert rows["cut.m4a"]["error"].startswith("truncated")
    detector = Detector.load(scoring.run, batch_seconds=0)
    for name in ("a.m4a", "a.webm", "a.mp4"):
        decoded, decoded_rate = avio.decode(folder / name)
        assert rows[name]["score"] == pytest.approx(detector.score(decoded, decoded_rate), abs=1e-5), name
    assert rows["a.flac"]["score"] == pytest.approx(detector.score(data, rate), abs=1e-5)


def test_asvspoof_format_lists_the_files_it_has_no_line_for(scoring, tmp_path):
    good = scoring.files("eval")[:2]
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"fLaC not really")
    out = tmp_path / "scores.tsv"
    result = run("--model", scoring.run, good[0], str(bad), good[1], "--out", out)
    assert result.exit_code == 1
    assert [line.split("\t")[0] for line in out.read_text().splitlines()[1:]] == [Path(f).stem for f in good]
    meta = json.loads((tmp_path / "scores.tsv.meta.json").read_text())
    assert meta["failed"] == 1 and [f["path"] for f in meta["failed_files"]] == [str(bad)]
    assert "not a readable audio file" in meta["failed_files"][0]["error"] and meta["failed_rows"].startswith("none")
