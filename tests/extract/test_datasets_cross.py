"""The cross-corpus datasets: ASVspoof 2021 LA and DF, In-the-Wild, MLAAD, Codecfake, on tiny
fixtures of each exact layout; their bad input (one problem line naming file and line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from extract.datasets import DatasetError, get_dataset, validate_table

LA_KEYS = [
    "LA_0009 LA_E_0000001 alaw ita_tx A07 spoof notrim eval",
    "LA_0009 LA_E_0000002 none - bonafide bonafide notrim eval",
    "LA_0010 LA_E_0000003 opus loc_tx A19 spoof notrim progress",
    "LA_0010 LA_E_0000004 gsm sin_tx bonafide bonafide trim hidden",
]
DF_KEYS = [
    "LA_0023 DF_E_0000001 nocodec asvspoof - bonafide notrim progress bonafide - - - -",
    "VCC2018 DF_E_0000002 low_mp3 vcc2018 Task1-team20 spoof notrim eval neural_vocoder_autoregressive "
    "Task1 team20 M-M eng",
    "LA_0031 DF_E_0000003 mp3m4a asvspoof A08 spoof notrim hidden traditional_vocoder - - - -",
    "LA_0031 DF_E_0000004 oggm4a asvspoof - bonafide notrim eval bonafide - - - -",
]


def write_audio(path: Path, n: int = 160) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(n, dtype=np.int16), 16000, subtype="PCM_16")


def make_2021(root: Path, track: str, key_lines: list[str] | None, trials: list[str] | None = None,
              missing: tuple[str, ...] = ()) -> Path:
    """A 2021 track's tree: trial list (default: the keys' trials), a FLAC per trial, the keys."""
    trials = trials if trials is not None else [line.split()[1] for line in key_lines]
    eval_dir = root / f"ASVspoof2021_{track}_eval"
    (eval_dir / "flac").mkdir(parents=True, exist_ok=True)
    (eval_dir / f"ASVspoof2021.{track}.cm.eval.trl.txt").write_text("".join(f"{t}\n" for t in trials))
    for trial in trials:
        if trial not in missing:
            write_audio(eval_dir / "flac" / f"{trial}.flac")
    if key_lines is not None:
        keys = root / "keys" / track / "CM" / "trial_metadata.txt"
        keys.parent.mkdir(parents=True, exist_ok=True)
        keys.write_text("".join(f"{line}\n" for line in key_lines))
    return root


def reasons(loaded) -> list[str]:
    return [p.reason for p in loaded.problems]


def test_asv21la_reads_keys_into_metadata(tmp_path):
    loaded = get_dataset("asv21la").load(make_2021(tmp_path, "LA", LA_KEYS))
    table = loaded.table
    validate_table(table)
    assert not loaded.problems
    assert table["utt_id"].tolist() == [line.split()[1] for line in LA_KEYS]
    assert (table["split"] == "eval").all()
    assert table["system"].tolist() == ["A07", "bonafide", "A19", "bonafide"]
    assert table["codec"].tolist() == ["alaw", "none", "opus", "gsm"]
    assert table["condition"].tolist() == ["C2", "C1", "C7", "C6"]
    assert table["phase"].tolist() == ["eval", "eval", "progress", "hidden"]
    assert table["trim"].tolist() == ["notrim", "notrim", "notrim", "trim"]
    assert loaded.attrs["keys_found"] is True
    assert all(Path(p).is_file() for p in table["path"])


def test_asv21df_reads_thirteen_columns(tmp_path):
    loaded = get_dataset("asv21df").load(make_2021(tmp_path, "DF", DF_KEYS))
    table = loaded.table
    assert not loaded.problems
    assert table["label"].tolist() == ["bonafide", "spoof", "spoof", "bonafide"]
    assert table["system"].tolist() == ["bonafide", "Task1-team20", "A08", "bonafide"]
    assert table["condition"].tolist() == ["C1", "C2", "C8", "C9"]
    assert table["vocoder"].tolist() == ["bonafide", "neural_vocoder_autoregressive", "traditional_vocoder", "bonafide"]
    assert table["source"].tolist() == ["asvspoof", "vcc2018", "asvspoof", "asvspoof"]
    assert table["language"].tolist()[1] == "eng" and table["gender_pair"].tolist()[1] == "M-M"


def test_2021_without_keys_extracts_unlabelled_and_names_the_keys_file(tmp_path):
    loaded = get_dataset("asv21la").load(make_2021(tmp_path, "LA", None, trials=["LA_E_1", "LA_E_2"]))
    assert loaded.table["label"].tolist() == ["-", "-"]
    assert loaded.attrs["keys_found"] is False
    assert loaded.attrs["keys"].endswith("keys/LA/CM/trial_metadata.txt")
    assert "WITHOUT keys" in loaded.description


def test_2021_bad_input_is_one_line_each(tmp_path):
    keys = [*LA_KEYS,
            "LA_0011 LA_E_0000005 mp3 - A07 spoof notrim eval",  # unknown codec
            "LA_0011 LA_E_0000006 none - A07 spoof notrim final",  # unknown phase
            "LA_0011 LA_E_0000001 none - A07 spoof notrim eval",  # duplicate id in the keys
            "LA_0011 LA_E_0000099 none - A07 spoof notrim eval"]  # not in the trial list
    trials = ["LA_E_0000001", "LA_E_0000002", "LA_E_0000003", "LA_E_0000004", "LA_E_0000005", "LA_E_0000006",
              "LA_E_0000007", "LA_E_0000002", "../../../escape"]
    root = make_2021(tmp_path, "LA", keys, trials=trials, missing=("LA_E_0000003",))
    loaded = get_dataset("asv21la").load(root)
    keys_file = str(root / "keys/LA/CM/trial_metadata.txt")
    trial_list = str(root / "ASVspoof2021_LA_eval/ASVspoof2021.LA.cm.eval.trl.txt")
    by_where = {r.split(": ", 1)[0]: r for r in reasons(loaded)}
    assert "unknown codec 'mp3'" in by_where[f"{keys_file}:5"]
    assert "unknown phase 'final'" in by_where[f"{keys_file}:6"]
    assert "duplicate trial id 'LA_E_0000001'" in by_where[f"{keys_file}:7"]
    assert "not in the trial list" in by_where[f"{keys_file}:8"]
    assert "LA_E_0000003.flac not found" in by_where[f"{trial_list}:3"]
    assert "has no line in the keys file" in by_where[f"{trial_list}:5"]  # its key line was refused
    assert "has no line in the keys file" in by_where[f"{trial_list}:7"]
    assert "duplicate trial id 'LA_E_0000002'" in by_where[f"{trial_list}:8"]
    assert "outside" in by_where[f"{trial_list}:9"]
    assert all("\n" not in r for r in reasons(loaded))
    assert loaded.table["utt_id"].tolist() == ["LA_E_0000001", "LA_E_0000002", "LA_E_0000004"]


def test_2021_without_trial_list_is_refused(tmp_path):
    tmp_path.joinpath("ASVspoof2021_DF_eval").mkdir()
    with pytest.raises(DatasetError, match="trial list not found"):
        get_dataset("asv21df").load(tmp_path)


def make_itw(root: Path, rows: list[str], header: str = "file,speaker,label") -> Path:
    folder = root / "release_in_the_wild"
    folder.mkdir(parents=True)
    (folder / "meta.csv").write_text(header + "\n" + "".join(f"{r}\n" for r in rows))
    for row in rows:
        name = row.split(",")[0]
        if name.endswith(".wav") and "missing" not in name and "/" not in name:
            write_audio(folder / name)
    return root


def test_itw_layout(tmp_path):
    root = make_itw(tmp_path, ["0.wav,Alec Guinness,spoof", "1.wav,Alec Guinness,bona-fide", "2.wav,Barack Obama,spoof",
                               "3.wav,Barack Obama,real", "missing.wav,X,spoof", "1.wav,Y,spoof", "../x.wav,Y,spoof"])
    loaded = get_dataset("itw").load(root)
    table = loaded.table
    assert table["utt_id"].tolist() == ["0.wav", "1.wav", "2.wav"]
    assert table["speaker"].tolist() == ["Alec Guinness", "Alec Guinness", "Barack Obama"]
    assert table["label"].tolist() == ["spoof", "bonafide", "spoof"]
    meta = str(root / "release_in_the_wild/meta.csv")
    found = reasons(loaded)
    assert found[0].startswith(f"{meta}:5: unknown label 'real'")
    assert found[1].startswith(f"{meta}:6: audio file") and "not found" in found[1]
    assert found[2].startswith(f"{meta}:7: duplicate utterance id '1.wav'")
    assert found[3].startswith(f"{meta}:8:") and "outside" in found[3]


def test_itw_refuses_other_columns(tmp_path):
    root = make_itw(tmp_path, ["0.wav,A,spoof"], header="file,speaker,label,extra")
    with pytest.raises(DatasetError, match=r"meta.csv:1: header 'file,speaker,label,extra': expected exactly"):
        get_dataset("itw").load(root)


MLAAD_HEADER = "path|original_file|language|is_original_language|duration|training_data|model_name|architecture|transcript"


def make_mlaad(root: Path) -> tuple[Path, Path]:
    bona = root / "mailabs"
    models = {("de", "tts_de_a"): ["de_DE/by_book/female/eva_k/book/wavs/a.wav", "de_DE/by_book/female/eva_k/book/wavs/b.wav"],
              ("de", "tts_de_b"): ["de_DE/by_book/female/eva_k/book/wavs/a.wav"],
              ("en", "tts_en_a"): ["en_US/by_book/male/joe/book/wavs/c.wav"]}
    for (language, model), originals in models.items():
        folder = root / "mlaad" / "fake" / language / model
        lines = [MLAAD_HEADER]
        for i, original in enumerate(originals):
            write_audio(folder / f"{i}.wav")
            write_audio(bona / original)
            lines.append(f"fake/{language}/{model}/{i}.wav|{original}|{language}|True|1.0|x|{model}|arch_{model[-1]}|t")
        (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    return root / "mlaad", bona


def test_mlaad_layout_with_bonafide_root(tmp_path):
    root, bona = make_mlaad(tmp_path)
    loaded = get_dataset("mlaad").load(root, bonafide_root=str(bona))
    table = loaded.table
    assert not loaded.problems
    spoof = table[table["label"] == "spoof"]
    assert sorted(spoof["model"]) == ["tts_de_a", "tts_de_a", "tts_de_b", "tts_en_a"]
    assert (spoof["system"] == spoof["model"]).all()
    bonafide = table[table["label"] == "bonafide"]
    assert len(bonafide) == 3  # a.wav is the source of two spoofs, listed once
    assert sorted(bonafide["speaker"]) == ["eva_k", "eva_k", "joe"]
    assert set(table["split"]) == {"all"} and "no official split" in loaded.description


def test_mlaad_split_by_model_keeps_models_apart(tmp_path):
    root, bona = make_mlaad(tmp_path)
    table = get_dataset("mlaad").load(root, bonafide_root=str(bona), split_by="model").table
    spoof = table[table["label"] == "spoof"]
    assert spoof.groupby("model")["split"].nunique().max() == 1
    assert dict(zip(spoof["model"], spoof["split"])) == {"tts_de_a": "train", "tts_de_b": "train", "tts_en_a": "train"}
    by_language = get_dataset("mlaad").load(root, bonafide_root=str(bona), split_by="language").table
    assert by_language.groupby("language")["split"].nunique().max() == 1
    with pytest.raises(DatasetError, match="split_by 'speaker' unknown"):
        get_dataset("mlaad").load(root, split_by="speaker")


def test_mlaad_without_bonafide_root_is_spoof_only_and_bad_header_refused(tmp_path):
    root, _ = make_mlaad(tmp_path)
    loaded = get_dataset("mlaad").load(root)
    assert (loaded.table["label"] == "spoof").all() and "spoof only" in loaded.description
    meta = root / "fake/en/tts_en_a/meta.csv"
    meta.write_text("path|original_file|language|model|arch\nx|y|en|m|a\n")
    with pytest.raises(DatasetError, match=r"tts_en_a/meta.csv:1: header .* lacks the column\(s\) model_name"):
        get_dataset("mlaad").load(root)


def make_codecfake(root: Path) -> Path:
    (root / "label").mkdir(parents=True)
    files = {"train": ["F01_a.wav", "F01_b.wav"], "dev": ["F02_a.wav"], "test/C1": ["T_a.wav", "T_b.wav"],
             "test/A2": ["T_a.wav", "U_c.wav"]}
    for folder, names in files.items():
        for name in names:
            write_audio(root / folder / name)
    (root / "label" / "train.txt").write_text("F01_a.wav real 0\nF01_b.wav fake 3\n")
    (root / "label" / "dev.txt").write_text("F02_a.wav fake 1\nF02_z.wav fake 1\n")
    (root / "label" / "C1.txt").write_text("T_a.wav real 0\nT_b.wav fake 2\n")
    (root / "label" / "A2.txt").write_text("T_a.wav fake 7\nU_c.wav fake 9\n")
    return root


def test_codecfake_layout(tmp_path):
    root = make_codecfake(tmp_path)
    loaded = get_dataset("codecfake").load(root)
    table = loaded.table.set_index("utt_id")
    assert table.loc["F01_b", "system"] == "M3" and table.loc["F01_a", "label"] == "bonafide"
    assert table.loc["F01_a", "split"] == "train" and table.loc["F02_a", "split"] == "dev"
    assert table.loc["test/C1/T_a", "label"] == "bonafide" and table.loc["test/A2/T_a", "label"] == "spoof"
    assert table.loc["test/A2/T_a", "condition"] == "A2" and table.loc["T_b", "condition"] == "C1"
    found = reasons(loaded)
    assert any(r.startswith(f"{root / 'label/A2.txt'}:2: unknown method '9'") for r in found)
    assert any(r.startswith(f"{root / 'label/dev.txt'}:2: labelled file 'F02_z.wav' not found") for r in found)
    assert any("U_c.wav: audio file has no label" in r for r in found)
    assert get_dataset("codecfake").load(root, ["test"]).table["split"].unique().tolist() == ["test"]


def test_extraction_with_a_training_stores_weights_keeps_the_metadata(tiny_store, tmp_path):
    """`pipeline extract --dataset asv21la --weights FILE`: the 2021 metadata become utterance columns;
    without keys the store extracts and evaluation names the keys file it needs."""
    from classify.data import DataError, load_split
    from extract.run import extract
    from store.reader import FeatureStore
    from tests.extract.conftest import quiet, tiny_config

    rng = np.random.default_rng(0)
    root = make_2021(tmp_path / "la", "LA", LA_KEYS)
    for path in (root / "ASVspoof2021_LA_eval/flac").iterdir():
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000, subtype="PCM_16")
    weights = str(Path(tiny_store) / "codec_weights.th")
    out = tmp_path / "la.zarr"
    extract(tiny_config(root, out, dataset="asv21la", weights=weights), log=quiet)
    store = FeatureStore(str(out))
    assert store.metadata_columns == ["condition", "transmission", "trim", "phase"]
    assert store.utterances["phase"].tolist() == ["eval", "eval", "progress", "hidden"]
    assert store.codec.weights_sha256 == FeatureStore(tiny_store).codec.weights_sha256
    assert store.score_format == "asvspoof2021"

    (root / "keys/LA/CM/trial_metadata.txt").unlink()
    bare = tmp_path / "bare.zarr"
    extract(tiny_config(root, bare, dataset="asv21la", weights=weights), log=quiet)
    with pytest.raises(DataError, match=r"extracted without keys: evaluation needs .*keys/LA/CM/trial_metadata.txt"):
        load_split(FeatureStore(str(bare)), "eval")


@pytest.mark.parametrize("track, keys", [("LA", LA_KEYS), ("DF", DF_KEYS), ("LA", None)])
def test_2021_column_wise_reading_equals_the_line_by_line_one(tmp_path, track, keys):
    from extract.datasets import asv21df, asv21la
    from extract.datasets.asv21 import load_2021

    layout = (asv21la if track == "LA" else asv21df).LAYOUT
    root = make_2021(tmp_path, track, keys, trials=None if keys else ["LA_E_1", "LA_E_2"])
    fast, slow = load_2021(layout, root, "x"), load_2021(layout, root, "x", fast=False)
    assert not fast.problems and not slow.problems
    pd.testing.assert_frame_equal(fast.table, slow.table)
    assert fast.attrs == slow.attrs and fast.description == slow.description
