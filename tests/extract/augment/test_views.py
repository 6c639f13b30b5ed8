"""Views files (extract.augment.views): the shipped files parse and hold what they promise, every
mistake is one line before any audio, a view is made again bit for bit from its seed and from its
recipe, and the estimate adds up the measured rates."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from extract.augment import AugmentError, apply_view, estimate, format_estimate, load_views, parse_views, select
from extract.augment.estimate import BYTES_PER_SECOND
from extract.augment.views import recipe_differences, step_generators, version_differences, view_from_recipe

REPO = Path(__file__).resolve().parents[3]
RATE = 16_000


def speechlike(seconds: float = 0.4, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * 210 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_the_shipped_training_views_cover_the_issue_and_run_offline():
    views = load_views(REPO / "configs/views/train.toml")
    assert all(v.splits == ("train",) and "ssl" not in v.streams for v in views.values())
    steps = [s.recipe() for v in views.values() for s in v.chain]
    kinds = {s["augment"] for s in steps}
    assert {"rawboost", "codec", "telephony", "noise", "reverb"} <= kinds
    codecs = {c for s in steps if s["augment"] == "codec" for c in ([s["codec"]] if isinstance(s["codec"], str) else s["codec"])}
    assert {"mp3", "opus"} <= codecs
    assert {s["codec"] for s in steps if s["augment"] == "telephony"} & {"amrnb", "alaw", "ulaw"}
    origins = {s["augment"]: s["origin"] for s in steps if s["augment"] in ("noise", "reverb")}
    assert origins["noise"] == "generated" and origins["reverb"].startswith("simulated")
    assert all(s.get("folder") is None for s in steps)  # offline as shipped


def test_the_shipped_robustness_views_are_codecs_and_channels_on_dev_and_eval():
    views = load_views(REPO / "configs/views/robustness.toml")
    assert len(views) >= 8
    for view in views.values():
        assert view.splits == ("dev", "eval")
        assert {s.name for s in view.chain} <= {"codec", "telephony"}


def test_the_commented_musan_and_rirs_variants_are_valid_tables(tmp_path):
    """The shipped comments, uncommented, with folders laid out as MUSAN and RIRS_NOISES are."""
    import soundfile as sf  # noqa: PLC0415

    for sub in ("musan/noise/a", "musan/music/b", "RIRS_NOISES/simulated_rirs/smallroom/Room001",
                "RIRS_NOISES/real_rirs_isotropic_noises"):
        (tmp_path / sub).mkdir(parents=True)
        sf.write(tmp_path / sub / "x.wav", np.r_[1.0, np.zeros(99)], RATE)
    text = (REPO / "configs/views/train.toml").read_text()
    variants = [line.removeprefix("# ") for line in text.splitlines() if line.startswith("# chain = ")]
    assert len(variants) == 3
    for k, line in enumerate(variants):
        line = line.replace("/data/", f"{tmp_path}/")
        parse_views(tomllib.loads(f'[view.v{k}]\nseed = 1\nsplits = ["train"]\n{line}\n'))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "views.toml"
    path.write_text(text)
    return path


GOOD = '[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "gain", db = [-3, 3]}]\n'


@pytest.mark.parametrize(("text", "words"), [
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "rawbost"}]\n', ["view.a: chain[0]", "unknown augmentation 'rawbost'", "known: codec"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "noise", snr = [5, 10]}]\n', ["view.a: chain[0] (noise)", "'snr'", "allowed", "snr_db"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "noise", snr_db = [20, 5]}]\n', ["snr_db", "upside down"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "noise", folder = "/no/musan"}]\n', ["/no/musan", "not found"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "codec", codec = "gsm"}]\n', ["codec 'gsm'"]),
    ('[view.a]\nseed = 3\nsplit = ["train"]\nchain = [{augment = "gain"}]\n', ["view.a", "unknown key 'split'", "allowed: chain"]),
    ('[view.a]\nsplits = ["train"]\nchain = [{augment = "gain"}]\n', ["'seed' is required"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nstreams = ["codes", "mfcc"]\nchain = [{augment = "gain"}]\n', ["streams", "'mfcc'", "allowed: codes"]),
    ('[view.a]\nseed = 3\nsplits = ["train"]\nchain = []\n', ["chain", "non-empty"]),
    ('[view.clean]\nseed = 3\nsplits = ["train"]\nchain = [{augment = "gain"}]\n', ["not 'clean'"]),
    ('[views.a]\nseed = 3\n', ["unknown top-level key 'views'"]),
    ('[view.a\n', ["invalid TOML"]),
])
def test_every_mistake_is_one_line_naming_the_file_view_and_key(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(AugmentError) as err:
        load_views(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert all(w in message for w in words), message


def test_a_missing_views_file_is_one_line(tmp_path):
    with pytest.raises(AugmentError, match="views file not found"):
        load_views(tmp_path / "nope.toml")


def chain_view(tmp_path: Path, seed: int = 5):
    text = (f'[view.mix]\nseed = {seed}\nsplits = ["train"]\n'
            'chain = [{augment = "rawboost", algo = 5}, {augment = "codec", codec = "mp3", bitrate = [16000, 64000]},'
            ' {augment = "noise", snr_db = [10, 20]}, {augment = "reverb", rt60_s = [0.2, 0.4]}]\n')
    return load_views(write(tmp_path, text))["mix"]


def test_a_view_is_made_again_bit_for_bit_whatever_the_order(tmp_path):
    view = chain_view(tmp_path)
    a, b = speechlike(seed=1), speechlike(seed=2)
    first = [apply_view(view, "LA_T_1", a, RATE), apply_view(view, "LA_T_2", b, RATE)]
    second = [apply_view(view, "LA_T_2", b, RATE), apply_view(view, "LA_T_1", a, RATE)][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    assert first[0].dtype == np.float32 and first[0].shape == a.shape
    other = apply_view(view, "LA_T_3", a, RATE)  # same audio, another id: other draws
    assert not np.array_equal(other, first[0])
    reseeded = apply_view(chain_view(tmp_path, seed=6), "LA_T_1", a, RATE)
    assert not np.array_equal(reseeded, first[0])


def test_the_rng_rule_is_the_documented_one(tmp_path):
    view = chain_view(tmp_path)
    digest = hashlib.sha256(b"LA_T_9").digest()
    root = np.random.SeedSequence([5, int.from_bytes(digest[:16], "little")])
    expected = [np.random.Generator(np.random.PCG64(c)).random(3) for c in root.spawn(4)]
    got = [g.random(3) for g in step_generators(view, "LA_T_9")]
    assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


def test_the_recipe_is_json_and_makes_the_same_view(tmp_path):
    view = chain_view(tmp_path)
    recipe = json.loads(json.dumps(view.recipe()))
    assert recipe["name"] == "mix" and recipe["seed"] == 5 and recipe["splits"] == ["train"]
    assert recipe["chain"][0]["centre_hz"] == [20.0, 8000.0]  # defaults resolved
    assert {"numpy", "scipy", "av", "ffmpeg", "pyroomacoustics"} <= set(recipe["versions"])
    again = view_from_recipe(recipe)
    assert again.recipe() == view.recipe()
    x = speechlike()
    assert np.array_equal(apply_view(again, "u1", x, RATE), apply_view(view, "u1", x, RATE))
    assert version_differences(recipe) == []
    recipe["versions"]["scipy"] = "0.1"
    assert version_differences(recipe) == [f"scipy {view.recipe()['versions']['scipy']} here, 0.1 in the recipe"]


def test_select_names_views_or_all(tmp_path):
    views = load_views(REPO / "configs/views/robustness.toml")
    assert list(select(views, "all")) == list(views)
    assert list(select(views, "alaw, mp3_32k")) == ["alaw", "mp3_32k"]
    with pytest.raises(AugmentError, match="view 'gsm': not defined; defined: mp3_32k"):
        select(views, "alaw,gsm")


def test_the_estimate_is_audio_of_the_views_splits_times_the_measured_rates(tmp_path):
    text = GOOD + '[view.b]\nseed = 4\nsplits = ["dev", "eval"]\nstreams = ["codes", "ssl"]\nchain = [{augment = "gain"}]\n'
    views = load_views(write(tmp_path, text))
    audio = {"train": 100.0, "dev": 30.0, "eval": 70.0}
    a, b = estimate(views, audio)
    assert a.audio_seconds == 100 and b.audio_seconds == 100
    assert a.bytes == {"codes": 1_204 * 100, "latent": 1_574_300, "energy": 15_000}
    assert b.bytes["ssl"] == pytest.approx(1.12e6 * 100, rel=0.01)  # 1.12 MB per audio second
    assert b.seconds > a.seconds  # the SSL stream is the slow one
    half = estimate(views, audio, ssl_layers=6)[1]
    assert half.bytes["ssl"] == pytest.approx(b.bytes["ssl"] / 2, rel=1e-6)
    from store.sslstorage import SSLStorage  # noqa: PLC0415

    # int8 (the default storage): 1026 bytes per 1024-dim layer row instead of 2048
    coded = estimate(views, audio, ssl_storage=SSLStorage.parse("int8"))[1]
    assert coded.bytes["ssl"] == pytest.approx(b.bytes["ssl"] * 1026 / 2048, rel=1e-6)
    assert estimate(views, audio, ssl_storage=SSLStorage.parse("pca:256"))[1].bytes["ssl"] == pytest.approx(
        b.bytes["ssl"] / 4, rel=1e-6)
    text = format_estimate([a, b])
    assert "view a: 100 audio s" in text and "views: 2" in text
    assert BYTES_PER_SECOND["codes"] == 1_204


def test_another_process_makes_the_same_samples(tmp_path):
    """Nothing hangs on process state (hash seeds, caches, import order): a fresh interpreter with
    another hash seed makes the same bytes."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    view = chain_view(tmp_path)
    x = speechlike()
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np; from extract.augment import load_views, apply_view; "
              "v = load_views(sys.argv[1])['mix']; x = np.load(sys.argv[2]); "
              "np.save(sys.argv[3], apply_view(v, 'LA_E_5', x, 16000))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "views.toml"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env, timeout=120)
    assert np.load(tmp_path / "y.npy").tobytes() == apply_view(view, "LA_E_5", x, RATE).tobytes()


def test_a_recipe_whose_noise_folder_changed_is_told(tmp_path):
    import soundfile as sf  # noqa: PLC0415

    folder = tmp_path / "musan" / "noise" / "a"
    folder.mkdir(parents=True)
    sf.write(folder / "1.wav", np.random.default_rng(0).standard_normal(800) * 0.1, RATE)
    text = f'[view.n]\nseed = 1\nsplits = ["train"]\nchain = [{{augment = "noise", folder = "{tmp_path / "musan"}"}}]\n'
    recipe = json.loads(json.dumps(load_views(write(tmp_path, text))["n"].recipe()))
    assert recipe_differences(recipe) == []
    sf.write(folder / "2.wav", np.random.default_rng(1).standard_normal(800) * 0.1, RATE)
    (message,) = recipe_differences(recipe)
    assert message.startswith("chain[0] (noise): the files under") and "'count': 2" in message


def test_the_estimate_divides_the_cpu_work_by_the_cores_the_load_leaves(tmp_path):
    from extract.augment.estimate import CODEC_SPEED, IDLE, Machine

    views = load_views(write(tmp_path, '[view.g]\nseed = 1\nsplits = ["train"]\nstreams = ["codes"]\n'
                                       'chain = [{augment = "gain"}]\n'))
    gain = views["g"].chain[0].audio_per_second()
    audio = {"train": 600.0}
    assert Machine(2, 0.0).cores_for(1) == 1 and Machine(2, 0.0).cores_for(2) == 2
    assert Machine(16, 0.0).cores_for(2) == 2 and Machine(1, 0.0).cores_for(2) == 1  # no thread above one core
    assert Machine(2, 2.0).cores_for(2) == 1  # four runnable threads on two cores: half a core each
    idle = estimate(views, audio, machine=IDLE)[0]
    assert idle.seconds == pytest.approx(600 / gain + 600 / CODEC_SPEED)  # both cores to itself: the measured rates
    assert idle.core_seconds == pytest.approx(600 / gain + 2 * 600 / CODEC_SPEED)
    busy = estimate(views, audio, machine=Machine(2, 16.0))[0]  # the shared VM while views.json was measured
    assert busy.seconds == pytest.approx(600 / gain * 17 / 2 + 600 / CODEC_SPEED * 18 / 2)
    assert busy.idle_seconds == idle.seconds and busy.core_seconds == idle.core_seconds
    assert 8.5 <= busy.seconds / idle.seconds <= 9  # the ~10x the bare rates left out at that load
    text = format_estimate([busy])
    assert "2 cores at 1-min load 16.0" in text and f"~{busy.seconds / 60:.1f} min" in text
    assert f"about {idle.seconds / 60:.1f} min on an idle 2-core CPU" in text


def test_the_estimate_prices_simulated_rooms_by_the_utterances_that_draw_them(tmp_path):
    """A room is simulated when an utterance first draws it: 24 utterances build at most 24 of a
    200-room bank (the estimate used to price all 200: 466 s predicted, 58 s taken, BENCHMARKS 17)."""
    from extract.augment.acoustic import ROOM_SECONDS  # noqa: PLC0415
    from extract.augment.estimate import IDLE  # noqa: PLC0415

    views = load_views(write(tmp_path, '[view.r]\nseed = 1\nsplits = ["train"]\nstreams = ["codes"]\n'
                                       'chain = [{augment = "reverb", rooms = 200}]\n'))
    step = views["r"].chain[0]
    audio = {"train": 60.0}
    few, unknown = (estimate(views, audio, machine=IDLE, utterances=n)[0] for n in ({"train": 24}, None))
    assert unknown.core_seconds - few.core_seconds == pytest.approx(ROOM_SECONDS * (200 - 24))
    many = estimate(views, audio, machine=IDLE, utterances={"train": 5000})[0]
    assert many.core_seconds == pytest.approx(unknown.core_seconds)  # never more rooms than the bank holds
    assert step.setup_seconds(24) == pytest.approx(ROOM_SECONDS * 24) and step.setup_seconds() == ROOM_SECONDS * 200
