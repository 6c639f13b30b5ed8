"""The sweep report: ranking, paired comparison against `mean`, level weights, codec warning."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classify.bootstrap import cluster_counts
from classify.config import TrainConfig
from classify.metrics import compute_eer
from classify.report import REPORT, ReportContext, write_report
from classify.report_stats import (
    SplitSummary,
    best_per_head,
    paired_vs_mean,
    ranking,
    selected,
    sign_test_p,
    split_summaries,
)
from classify.scorefiles import read_scores
from classify.sweep import (
    FAILED,
    OK,
    TrialTask,
    expand,
    load_sweep,
    read_results,
    result_row,
    run_sweep,
    run_trial,
    store_identity,
)
from store.reader import FeatureStore
from tests.synthetic import synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABEL = "UNTRAINED EnCodec 24 kHz (random encoder, k-means codebooks; not real codec features), weights sha256 abc"


def row(variant: str, seed: int, eer: float, trained: bool = False, status: str = OK, dev: float | None = None,
        **config) -> dict:
    """A results row with eval EER ``eer`` (dev EER ``dev``, default eer / 2) and level weights of the
    right shape."""
    values = dataclasses.asdict(TrainConfig(variant=variant, seed=seed, **config))
    task = TrialTask(f"{variant}-s{seed}-{len(config)}", values, {"variant": variant, "seed": seed}, "s.zarr", "t", "eval")
    if status != OK:
        return result_row(task, status, "DataError: boom | bad")
    weights = np.full((8, 4), 1 / 8) if variant == "qaf-static" else np.linspace(0.2, 0.05, 8) / 1.0
    return result_row(task, OK, eval_eer=eer, dev_eer=eer / 2 if dev is None else dev, eval_min_dcf=0.5, eval_act_dcf=0.6, eval_cllr=0.9,
                      n_trainable=100, codec_weights_label=LABEL if not trained else "EnCodec 24 kHz pretrained",
                      codec_trained=trained, level_weights=json.dumps(weights.tolist()))


def context(**splits: SplitSummary) -> ReportContext:
    return ReportContext("configs/sweeps/x.toml", "s.zarr", "asv19", "/data/x", "eval", {"epochs": 1},
                         {"variant": ["mean", "scalar"], "seed": [0, 1, 2]}, dict(splits))


def section(report: str, title: str) -> str:
    return report.split(f"## {title}")[1].split("\n## ")[0]


@pytest.fixture
def synthetic() -> pd.DataFrame:
    eers = {"mean": [0.30, 0.20, 0.25], "scalar": [0.10, 0.25, 0.15], "qaf-static": [0.28, 0.18, 0.24]}
    rows = [row(v, s, e) for v, values in eers.items() for s, e in enumerate(values)]
    rows.append(row("scalar", 0, 0.01, lr=0.5))  # no `mean` with lr 0.5: not paired
    rows.append(row("cumulative", 0, 0.0, status=FAILED))
    return pd.DataFrame(rows)


def test_ranking_and_paired_differences(synthetic):
    table = ranking(synthetic)
    assert list(table["setting"]) == ["variant=scalar, lr=0.5", "variant=scalar, lr=0.001",
                                      "variant=qaf-static, lr=0.001", "variant=mean, lr=0.001"]
    scalar = table.iloc[1]
    assert scalar["n_seeds"] == 3 and scalar["eval_eer_mean"] == pytest.approx(0.5 / 3)
    assert scalar["eval_eer_std"] == pytest.approx(np.std([0.10, 0.25, 0.15], ddof=1))
    assert (scalar["eval_eer_min"], scalar["eval_eer_max"]) == (0.10, 0.25)
    assert math.isnan(table.iloc[0]["eval_eer_std"]) and table.iloc[0]["n_seeds"] == 1

    paired = paired_vs_mean(synthetic).set_index("setting")
    assert len(paired) == 2  # the lr=0.5 setting has no otherwise-equal `mean`
    s = paired.loc[table.iloc[1]["setting"]]
    assert s["diffs"] == pytest.approx({0: -0.20, 1: 0.05, 2: -0.10})
    assert s["diff_mean"] == pytest.approx(-0.25 / 3) and (s["wins"], s["losses"], s["ties"]) == (2, 1, 0)
    assert s["diff_std"] == pytest.approx(np.std([-0.20, 0.05, -0.10], ddof=1)) and s["sign_p"] == 1.0
    q = paired.loc[table.iloc[2]["setting"]]
    assert (q["wins"], q["n_paired"]) == (3, 3) and q["sign_p"] == pytest.approx(0.25)


def test_ranking_selects_on_dev_never_on_eval():
    rows = [row("mean", s, 0.10, dev=0.40) for s in range(2)] + [row("scalar", s, 0.30, dev=0.20) for s in range(2)]
    rows += [row("qaf-static", s, 0.05, dev=0.30, head="stats", head_kwargs={}) for s in range(2)]
    table = ranking(pd.DataFrame(rows))
    assert list(table["variant"]) == ["scalar", "qaf-static", "mean"]  # by dev; eval would say qaf, mean, scalar
    heads = best_per_head(table)
    assert list(zip(heads["head"], heads["variant"])) == [("lstm", "scalar"), ("stats", "qaf-static")]


def test_the_energy_control_is_shown_beside_the_heads_and_never_selected(tmp_path):
    """`energy` (no codec) wins on dev here, yet the selected setting and each head's best are codec
    settings; the control appears in the ranking and beside the heads, marked, without weights."""
    stats = {"head": "stats", "head_kwargs": {}}
    rows = [row("mean", s, 0.30, dev=0.30) for s in range(2)] + [row("scalar", s, 0.20, dev=0.25, **stats)
                                                                  for s in range(2)]
    rows += [row("energy", s, 0.08, dev=0.05, **stats) for s in range(2)]
    results = pd.DataFrame(rows)
    results.loc[results["variant"] == "energy", "level_weights"] = ""
    table = ranking(results)
    assert list(table["variant"]) == ["energy", "scalar", "mean"] and list(table["control"]) == [True, False, False]
    assert selected(table)["variant"] == "scalar"
    heads = best_per_head(table)
    assert list(zip(heads["head"], heads["variant"])) == [("stats", "scalar"), ("lstm", "mean")]
    text = write_report(results, tmp_path, context(eval=SplitSummary(100, 40, 60, 5))).read_text()
    assert "**Selected on dev: `variant=scalar, head=stats`**" in text
    side = section(text, "Heads side by side").splitlines()
    rows_md = [line for line in side if line.startswith("| `")]
    assert [line.split(" | ")[1] for line in rows_md] == ["`variant=scalar, head=stats`", "`variant=mean, head=lstm`",
                                                          "`variant=energy, head=stats`"]
    assert rows_md[-1].startswith("| `stats` (control: no codec) |") and "| 8.00 |" in rows_md[-1]
    assert "`variant=energy, head=stats` (control: no codec)" in section(text, "Ranking on dev, eval reported")
    assert "energy" not in section(text, "Learned level weights")
    assert "no codec at all" in section(text, "What this can and cannot show")


def test_a_results_table_older_than_ssl_kwargs_is_read_and_reported(synthetic, tmp_path):
    """Trial ids did not change when ssl_kwargs came (`classify.migrations.id_fields`), so a sweep resumes an older
    results table: it reads with the column filled in, and reports as before."""
    older = synthetic.drop(columns=["ssl_kwargs"])
    older["config_json"] = [json.dumps({k: v for k, v in json.loads(c).items() if k != "ssl_kwargs"})
                            for c in older["config_json"]]
    older.iloc[:2].to_parquet(tmp_path / "results.parquet", index=False)
    table = pd.concat([read_results(tmp_path), synthetic.iloc[2:]], ignore_index=True)  # a resumed sweep's rows
    assert (table["ssl_kwargs"] == "{}").all()
    assert ranking(table)["n_seeds"].tolist() == ranking(synthetic)["n_seeds"].tolist()  # one setting, all seeds
    text = write_report(table, tmp_path, context()).read_text()
    assert "**Selected on dev: `variant=scalar, lr=0.5`**" in text


def test_sign_test():
    assert sign_test_p(3, 0) == 0.25 and sign_test_p(0, 3) == 0.25 and sign_test_p(2, 1) == 1.0
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(10, 0) == pytest.approx(2 / 1024)


def test_report_names_the_codec_first_and_warns_when_untrained(synthetic, tmp_path):
    path = write_report(synthetic, tmp_path, context(eval=SplitSummary(100, 40, 60, 5)))
    text = path.read_text()
    head = text.splitlines()[:5]
    assert head[0].startswith("# Sweep report: x.toml") and f"**Codec weights: {LABEL}**" in head
    assert any("WARNING: the codec is UNTRAINED" in line for line in head)
    assert "say nothing about" in section(text, "What this can and cannot show")
    assert "40 bona fide and 60 spoof utterances from 5 speakers" in text and "2.50 pp" in text
    assert "## Failed trials" in text and "DataError: boom \\| bad" in text
    for name in ("eer.png", "weights_variant_scalar__lr_0.001.png", "weights_variant_qaf-static__lr_0.001.png"):
        assert (tmp_path / name).stat().st_size > 1000 and f"]({name})" in text
    assert not (tmp_path / "weights_variant_mean__lr_0.001.png").exists()  # fixed weights: table only
    weights = section(text, "Learned level weights")
    assert re.search(r"`variant=mean, lr=0.001` \| fixed \| 3 \| 0.200 \|", weights)
    assert "`variant=qaf-static, lr=0.001` | learned | 3 | 0.125 |" in weights

    trained = synthetic.assign(codec_trained=True, codec_weights_label="EnCodec 24 kHz pretrained")
    text = write_report(trained, tmp_path / "t", context()).read_text()
    assert "UNTRAINED" not in text and "**Codec weights: EnCodec 24 kHz pretrained**" in text


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str]:
    """A real tiny sweep (2 variants x 2 seeds, 1 epoch) and its report."""
    tmp = tmp_path_factory.mktemp("report")
    store = FeatureStore(synthetic_store(str(tmp / "s.zarr"), n_per_split=12, frames=(30, 60), latent=False))
    (tmp / "s.toml").write_text("[base]\nepochs = 1\nbatch_size = 8\nlr = 1e-2\nwarmup_steps = 0\n"
                                "crop_seconds = 0.4\ndevice = 'cpu'\nhead_kwargs = {proj_dim = 8, hidden_dim = 8}\n"
                                "[grid]\nvariant = ['mean', 'scalar']\nseed = [0, 1]\n")
    spec = load_sweep(tmp / "s.toml")
    outcome = run_sweep(expand(spec, store_identity(store)), store.url, tmp / "out", "eval",
                        lambda tasks: map(run_trial, tasks))
    ctx = ReportContext(str(tmp / "s.toml"), store.url, "asv19", "/synthetic", "eval", spec.base, spec.grid,
                        split_summaries(store, ["train", "dev", "eval"]), utterances=store.utterances, n_boot=200)
    write_report(outcome.results, tmp / "out", ctx)
    return tmp / "out", (tmp / "out" / REPORT).read_text()


def test_report_ranking_matches_the_results_table(swept):
    out, text = swept
    table = pd.read_parquet(out / "results.parquet")
    means = table.groupby("variant")[["eval_eer", "dev_eer"]].agg(["mean", "std", "min", "max", "size"])
    order = list(means.sort_values(("dev_eer", "mean"), kind="mergesort").index)
    ranking_text = section(text, "Ranking on dev, eval reported")
    rows = [line for line in ranking_text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [re.search(r"`([^`]+)`", line).group(1) for line in rows] == order
    assert f"**Selected on dev: `{order[0]}`**" in ranking_text
    for line, variant in zip(rows, order):
        m = means.loc[variant, "eval_eer"]
        assert f"| {100 * means.loc[variant, ('dev_eer', 'mean')]:.2f} | {100 * m['mean']:.2f} |" in line
        assert f"| {100 * m['std']:.2f} | {100 * m['min']:.2f}–{100 * m['max']:.2f} |" in line
        assert f"| {int(m['size'])} |" in line
    assert "12 utterances (5 bona fide / 7 spoof, 4 speakers)" in text


def test_report_intervals_are_the_speaker_attack_bootstrap_of_the_score_files(swept):
    """Recompute the `scalar` interval by hand: the same seeded draws, the replicated trial lists built
    explicitly from each seed's eval score file, the official EER, averaged over seeds."""
    out, text = swept
    results = read_results(out)
    store = FeatureStore(results["store"].iloc[0])
    rows = store.utterances[(store.utterances["split"] == "eval") & (store.utterances["status"] == "ok")]
    bona = (rows["label"] == "bonafide").to_numpy()
    counts = cluster_counts(rows["speaker"].tolist(), rows["system"].tolist(), bona, 200, np.random.default_rng(0))
    per_seed = []
    for trial_dir in results.loc[results["variant"] == "scalar", "trial_dir"]:
        scores = read_scores(next((Path(trial_dir) / "eval").glob("scores.t*")))
        aligned = pd.Series(scores.scores, index=scores.utt_ids).reindex(rows["utt_id"]).to_numpy()
        eers = []
        for r in range(200):
            b, s = np.repeat(aligned[bona], counts[r, bona]), np.repeat(aligned[~bona], counts[r, ~bona])
            eers.append(compute_eer(b, s)[0] if b.size and s.size else np.nan)
        per_seed.append(eers)
    replicates = np.mean(per_seed, axis=0)
    low, high = np.percentile(replicates[np.isfinite(replicates)], [2.5, 97.5])
    line = next(x for x in section(text, "Ranking on dev, eval reported").splitlines() if "| `scalar` |" in x)
    assert f"| {100 * low:.2f}–{100 * high:.2f} |" in line
    assert "4 speakers and 3 attacks (12 utterances), 200 replicates, seed 0" in text
    assert re.search(r"\| `scalar` \| 2 \|.*\| [+-]\d+\.\d\d / [+-]\d+\.\d\d \|", section(text, "Paired comparison"))


def test_report_paired_section_matches_the_results_table(swept):
    out, text = swept
    table = read_results(out).set_index(["variant", "seed"])["eval_eer"]
    diffs = [table["scalar", s] - table["mean", s] for s in (0, 1)]
    line = next(x for x in section(text, "Paired comparison against `mean`").splitlines() if x.startswith("| `scalar`"))
    assert f"s0: {100 * diffs[0]:+.2f}, s1: {100 * diffs[1]:+.2f}" in line
    assert f"| {100 * np.mean(diffs):+.2f} |" in line and f"| {sum(d < 0 for d in diffs)}/2" in line
    assert "**Codec weights: SYNTHETIC test codebooks" in text.splitlines()[2]


def test_the_caveat_follows_the_stores_provenance(synthetic):
    """What the sweep cannot show depends on its data: an untrained codec cannot speak for the trained
    one, a corpus that is not ASVspoof cannot speak for ASVspoof; a trained codec on ASVspoof can."""
    from dataclasses import replace

    from classify.report import _cannot_show

    trained = pd.DataFrame([row("mean", s, 0.2, trained=True) for s in range(2)])
    demo, asvspoof = context(), replace(context(), official_dataset=True)
    assert "on ASVspoof or with a trained codec" in _cannot_show(demo, synthetic)
    assert "compare with a trained codec," in _cannot_show(asvspoof, synthetic)
    assert "compare on ASVspoof," in _cannot_show(demo, trained)
    text = _cannot_show(asvspoof, trained)
    assert "ASVspoof" not in text and "trained codec" not in text and "other corpora" in text


def test_the_paired_table_uses_the_sweeps_baseline(synthetic, tmp_path):
    """Paired against `scalar` (a sweep file's ``baseline``): the differences are the other settings'
    EERs minus scalar's, seed by seed (independently restated here)."""
    from dataclasses import replace

    paired = paired_vs_mean(synthetic, baseline="scalar").set_index("setting")
    eers = {"mean": [0.30, 0.20, 0.25], "scalar": [0.10, 0.25, 0.15], "qaf-static": [0.28, 0.18, 0.24]}
    for variant in ("mean", "qaf-static"):
        expected = {s: a - b for s, (a, b) in enumerate(zip(eers[variant], eers["scalar"]))}
        assert paired.loc[f"variant={variant}, lr=0.001", "diffs"] == pytest.approx(expected)
    assert list(paired.index) == ["variant=qaf-static, lr=0.001", "variant=mean, lr=0.001"]  # by mean Δ
    text = write_report(synthetic, tmp_path, replace(context(), baseline="scalar")).read_text()
    assert "## Paired comparison against `scalar`" in text
    assert "`variant=mean, lr=0.001`" in section(text, "Paired comparison against `scalar`")
