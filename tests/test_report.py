"""golf.report built from hand-written result.json fixtures (tests/fixtures/results/<study>/runs/*).

ttt_gap: score_first (legal) and prequant_val (illegal), seeds 1337/42/7, TTT epochs 0..3 with halves A
(adapted) and B (held out); two quantisation rows without TTT (int6/brotli, fp16/zlib that does not fit);
one result.json cut in half. ut_loops: UT loops 2/6 x curriculum on/off x 2 seeds, no TTT.
The expected numbers are recomputed here from the JSON files with plain Python, not with golf.report.
"""

import json
import math
import re
import shutil
import statistics
import warnings
from pathlib import Path

import pandas as pd
import pytest

from golf import stats
from golf.errors import GolfError
from golf.report import SECTIONS, load_results, parse_sections, per_epoch_frame, read_results, write_report
from golf.report.figures import _pareto
from golf.report.frame import _results_frame, key_columns

TTT_SECTIONS = parse_sections(["ttt_curves", "gap", "slopes", "frontier"], "test")
UT_SECTIONS = parse_sections([{"curve": {"x": "model.ut_loops"}}, "frontier"], "test")

FIXTURES = Path(__file__).parent / "fixtures" / "results"
TRUNCATED = "score_first_e3_s2024"


def fixture_results(study):
    """Every complete fixture result.json, parsed with json alone (the truncated one fails here too)."""
    out = []
    for path in sorted((FIXTURES / study / "runs").glob("*/result.json")):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            assert path.parent.name == TRUNCATED
    return out


@pytest.fixture(scope="module")
def ttt_report(tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("studies") / "ttt_gap"
    shutil.copytree(FIXTURES / "ttt_gap", study_dir)
    return study_dir, write_report(study_dir, TTT_SECTIONS)


@pytest.fixture(scope="module")
def ut_report(tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("studies") / "ut_loops"
    shutil.copytree(FIXTURES / "ut_loops", study_dir)
    (study_dir / "gap.md").write_text("stale table from an older report\n")
    return study_dir, write_report(study_dir, UT_SECTIONS)


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


def test_load_results_flattens_and_skips_truncated():
    with pytest.warns(RuntimeWarning, match=TRUNCATED):
        frame = load_results(FIXTURES / "ttt_gap")
    assert len(frame) == 8  # 3 seeds x 2 strategies + 2 quant rows; the cut file is not read
    assert TRUNCATED not in set(frame["run_id"])
    assert any(TRUNCATED in reason and "not complete JSON" in reason for reason in frame.attrs["skipped"])
    for col in (
        "run_id",
        "seed",
        "preset",
        "strategy",
        "epochs",
        "legal",
        "val_bpb",
        "val_bpb_prequant",
        "val_bpb_postquant",
        "bytes_total",
        "fits",
        "quant",
        "compressor",
    ):
        assert col in frame.columns
    row = frame.set_index("run_id").loc["prequant_val_e3_s42"]
    assert (row["seed"], row["preset"], row["strategy"], row["epochs"]) == (42, "baseline", "prequant_val", 3)
    assert not row["legal"] and row["fits"]
    assert row["val_bpb"] == 1.20121 and row["bytes_total"] == 15_815_512 + 47_642
    assert not frame.set_index("run_id").loc["none_fp16_zlib_s1337", "fits"]


def test_study_overrides_become_columns_named_by_their_config_keys():
    frame = load_results(FIXTURES / "ut_loops")
    assert {"model.ut_loops", "model.ut_curriculum_frac", "bundle"} <= set(frame.columns)
    row = frame.set_index("run_id").loc["ut6_curr_s42"]
    assert row["model.ut_loops"] == 6 and row["model.ut_curriculum_frac"] == 0.5 and row["bundle"] == "none"
    assert key_columns(frame)[-3:] == ["bundle", "model.ut_curriculum_frac", "model.ut_loops"]


def test_bad_files_are_skipped_with_reasons(tmp_path):
    good = json.loads((FIXTURES / "ttt_gap/runs/score_first_e3_s42/result.json").read_text())
    cases = {
        "ok": good,
        "schema2": {**good, "schema": 2},
        "no_bpb": {**good, "eval": {k: v for k, v in good["eval"].items() if k != "val_bpb"}},
        "list": [1, 2],
        "legal_str": {**good, "ttt": {**good["ttt"], "legal": "yes"}},
        "bad_epoch": {**good, "ttt": {**good["ttt"], "per_epoch": [{"val_bpb": 1.2}]}},
        "zz_copy": good,  # same run_id as "ok": one seed must not count twice
    }
    for name, obj in cases.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps(obj))
    (tmp_path / "runs" / "empty").mkdir()
    (tmp_path / "runs" / "empty" / "result.json").write_text("")
    results, skipped = read_results(tmp_path)
    assert len(results) == 1
    text = "\n".join(skipped)
    assert "schema2/result.json: schema 2" in text
    assert "no_bpb/result.json: missing key eval.val_bpb" in text
    assert "list/result.json: top level is list" in text
    assert "legal_str/result.json: legal is 'yes'" in text
    assert "empty/result.json: not complete JSON" in text
    assert "bad_epoch/result.json: ttt.per_epoch[0] needs an integer 'epoch'" in text
    assert "zz_copy/result.json: run_id 'score_first_e3_s42' already read from runs/ok/result.json" in text


def test_missing_or_empty_study_is_a_clear_error(tmp_path):
    with pytest.raises(GolfError, match="no runs folder"):
        load_results(tmp_path)
    (tmp_path / "runs" / "cut").mkdir(parents=True)
    (tmp_path / "runs" / "cut" / "result.json").write_text('{"schema": 1, "run_')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_results(tmp_path).empty
    with pytest.raises(GolfError, match="no complete result.json"):
        write_report(tmp_path)
    assert not (tmp_path / "summary.csv").exists()


def test_per_epoch_frame_gains_relative_to_epoch_zero():
    results = fixture_results("ttt_gap")
    frame = per_epoch_frame(results)
    assert len(frame) == 6 * 4 + 2  # six TTT runs x epochs 0..3, two runs with only epoch 0
    run = frame[frame["run_id"] == "prequant_val_e3_s7"].set_index("epoch")
    # from the fixture: epoch 0 (1.22415, A 1.22279, B 1.22551), epoch 2 (1.20818, A 1.19690, B 1.21946)
    assert run.loc[2, "gain"] == pytest.approx(1.20818 - 1.22415, abs=1e-12)
    assert run.loc[2, "gain_adapted"] == pytest.approx(1.19690 - 1.22279, abs=1e-12)
    assert run.loc[2, "gain_heldout"] == pytest.approx(1.21946 - 1.22551, abs=1e-12)
    assert run.loc[0, ["gain", "gain_adapted", "gain_heldout"]].tolist() == [0.0, 0.0, 0.0]
    quant = frame[frame["run_id"] == "none_int6_brotli_s1337"]
    assert quant["val_bpb_adapted"].isna().all()  # null in result.json -> NaN
    assert per_epoch_frame(FIXTURES / "ttt_gap").equals(frame)  # a study folder works as input too


# ----------------------------------------------------------------------------------------------------
# The written report
# ----------------------------------------------------------------------------------------------------


def test_report_writes_expected_files(ttt_report):
    study_dir, written = ttt_report
    names = sorted(str(p.relative_to(study_dir)) for p in written)
    figures = [f"figures/{n}.{e}" for n in ("frontier", "ttt_curves", "ttt_slopes") for e in ("png", "svg")]
    assert names == sorted(
        figures + ["summary.csv", "summary.md", "gap.csv", "gap.md", "slopes.csv", "slopes.md"]
    )
    for path in written:
        assert path.stat().st_size > 0
    assert (study_dir / "figures/ttt_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (study_dir / "figures/frontier.svg").read_bytes()[:500]
    assert not list(study_dir.glob("figures/curve_*"))  # no curve section listed
    assert not list(study_dir.glob("**/*.tmp"))


def test_summary_means_match_fixture(ttt_report):
    study_dir, _ = ttt_report
    summary = pd.read_csv(study_dir / "summary.csv")
    assert len(summary) == 4  # score_first, prequant_val, none/int6/brotli, none/fp16/zlib
    results = fixture_results("ttt_gap")
    for strategy in ("score_first", "prequant_val"):
        runs = [r for r in results if r["ttt"]["strategy"] == strategy]
        bpb = [r["eval"]["val_bpb"] for r in runs]
        size = [r["artifact"]["bytes_total"] for r in runs]
        row = summary[summary["strategy"] == strategy].iloc[0]
        assert row["n_seeds"] == 3 and row["seeds"] == "7 42 1337"
        assert row["val_bpb_mean"] == pytest.approx(sum(bpb) / len(bpb), abs=1e-12)
        assert row["val_bpb_std"] == pytest.approx(statistics.stdev(bpb), rel=1e-9)
        half = 4.302653 * statistics.stdev(bpb) / math.sqrt(3)  # t_{0.975,2} from the table
        assert row["val_bpb_ci_low"] == pytest.approx(sum(bpb) / 3 - half, abs=1e-8)
        assert row["bytes_total_mean"] == pytest.approx(sum(size) / 3, abs=1e-6)
    # Spelled out for score_first: final val_bpb 1.22238, 1.22279, 1.22210 -> mean 3.66727 / 3 = 1.2224233
    sf = summary[summary["strategy"] == "score_first"].iloc[0]
    assert sf["val_bpb_mean"] == pytest.approx(3.66727 / 3, abs=1e-12)
    fp16 = summary[summary["quant"] == "fp16"].iloc[0]
    assert fp16["n_seeds"] == 1 and math.isnan(fp16["val_bpb_std"]) and not fp16["fits_all"]


def test_summary_markdown(ttt_report):
    study_dir, _ = ttt_report
    text = (study_dir / "summary.md").read_text()
    assert "| strategy |" in text and "95% CI" in text and "n seeds" in text
    assert "Common to all rows: preset=baseline" in text
    assert "1.22242 ± 0.00035" in text  # score_first: mean 1.2224233, std 0.000347
    assert f"runs/{TRUNCATED}/result.json: not complete JSON" in text


def test_gap_table_matches_fixture(ttt_report):
    study_dir, _ = ttt_report
    gap = pd.read_csv(study_dir / "gap.csv").set_index("strategy")
    assert set(gap.index) == {"score_first", "prequant_val"}  # runs without TTT epochs have no gap
    results = fixture_results("ttt_gap")
    gains = {}
    for strategy in ("score_first", "prequant_val"):
        runs = [r["ttt"]["per_epoch"] for r in results if r["ttt"]["strategy"] == strategy]
        g = {
            key: [pe[-1][key] - pe[0][key] for pe in runs]
            for key in ("val_bpb", "val_bpb_adapted", "val_bpb_heldout")
        }
        gains[strategy] = g
        row = gap.loc[strategy]
        assert row["epoch_final"] == 3 and row["n_seeds"] == 3 and row["n_runs"] == len(runs) == 3
        assert row["gain_mean"] == pytest.approx(sum(g["val_bpb"]) / 3, abs=1e-12)
        assert row["gain_adapted_mean"] == pytest.approx(sum(g["val_bpb_adapted"]) / 3, abs=1e-12)
        assert row["gain_heldout_std"] == pytest.approx(statistics.stdev(g["val_bpb_heldout"]), rel=1e-9)
        ab = stats.paired_t_test(g["val_bpb_adapted"], g["val_bpb_heldout"])  # A and B of one run are a pair
        assert row["pvalue_adapted_vs_heldout"] == pytest.approx(ab["p_value"], rel=1e-9)
    # prequant_val A gains: 1.18450-1.22310, 1.18512-1.22338, 1.18407-1.22279 = -0.0386, -0.03826, -0.03872
    assert gap.loc["prequant_val", "gain_adapted_mean"] == pytest.approx(-(0.0386 + 0.03826 + 0.03872) / 3)
    # memorisation: illegal val training helps A far more than B; legal score-first does not separate them
    assert gap.loc["prequant_val", "pvalue_adapted_vs_heldout"] < 0.001
    assert "pvalue_legal_vs_illegal" not in gap.columns  # between strategies: paired.md, paired by unit
    assert "paired t-test" in (study_dir / "gap.md").read_text()


def test_slopes_match_fixture(ttt_report):
    study_dir, _ = ttt_report
    slopes = pd.read_csv(study_dir / "slopes.csv")
    assert len(slopes) == 6  # 2 strategies x halves all/A/B
    results = fixture_results("ttt_gap")
    for strategy in ("score_first", "prequant_val"):
        xs, ys = [], []
        for r in results:
            if r["ttt"]["strategy"] == strategy:
                pe = r["ttt"]["per_epoch"]
                for e in pe[1:]:  # epochs 1..3; epoch 0 has gain 0 by definition
                    xs.append(e["epoch"])
                    ys.append(e["val_bpb_heldout"] - pe[0]["val_bpb_heldout"])
        fit = stats.linear_fit(xs, ys)
        row = slopes[(slopes["strategy"] == strategy) & (slopes["half"] == "B")].iloc[0]
        assert row["n_points"] == 9
        for key in ("slope", "intercept", "slope_se", "r2", "p_value"):
            assert row[key] == pytest.approx(fit[key], rel=1e-9)
    a_rows = slopes[slopes["half"] == "A"].set_index("strategy")
    # the illegal strategy keeps gaining on A every epoch: about 50x the legal slope
    assert a_rows.loc["prequant_val", "slope"] < 20 * a_rows.loc["score_first", "slope"] < 0


def test_ut_study_report(ut_report):
    study_dir, written = ut_report
    names = sorted(str(p.relative_to(study_dir)) for p in written)
    assert names == sorted(
        [
            "figures/frontier.png",
            "figures/frontier.svg",
            "figures/curve_ut_loops.png",
            "figures/curve_ut_loops.svg",
            "summary.csv",
            "summary.md",
        ]
    )
    assert not (study_dir / "gap.md").exists()  # stale table from the earlier report is removed
    summary = pd.read_csv(study_dir / "summary.csv")
    row = summary[(summary["model.ut_loops"] == 6) & (summary["model.ut_curriculum_frac"] == 0.5)].iloc[0]
    assert row["val_bpb_mean"] == pytest.approx((1.22618 + 1.22750) / 2, abs=1e-12)
    assert "| model.ut_curriculum_frac | model.ut_loops |" in (study_dir / "summary.md").read_text()


def test_report_is_reproducible(ut_report):
    study_dir, written = ut_report
    before = {p: p.read_bytes() for p in written}
    again = write_report(study_dir, UT_SECTIONS)
    assert again == written
    for path in written:
        assert path.read_bytes() == before[path], path


def test_pareto_front():
    # (bytes, bpb): lower is better in both. (3, 1.0) is dominated by (2, 0.9);
    # (5, 0.9) ties the bpb of (2, 0.9) with more bytes, so it is dominated too.
    points = [(1, 1.5), (3, 1.0), (2, 0.9), (4, 0.8), (5, 0.9)]
    assert _pareto(points) == [0, 2, 3]


def test_key_columns_drop_parameters_that_repeat_a_base_key_and_constants_read_cleanly():
    from golf.report.tables import _constants_line, _fmt

    frame = pd.DataFrame(
        {
            "strategy": ["score_first", "prequant_val"],
            "ttt.strategy": ["score_first", "prequant_val"],  # the override behind `strategy`
            "data.max_val_tokens": [16384.0, 16384.0],  # an int that pandas holds as float
            "bundle": ["none", "none"],
        }
    )
    keys = key_columns(frame)
    assert keys == ["strategy", "data.max_val_tokens", "bundle"]  # in the frame's order (read sorts them)
    assert _fmt(16384.0, "other") == "16384" and _fmt(0.25, "other") == "0.25"
    assert _constants_line(frame, keys, ["strategy"]) == ("Common to all rows: data.max_val_tokens=16384, "
                                                          "bundle=none.\n")


def test_key_columns_drop_parameters_the_resolved_keys_determine():
    # quant_budget's grid: quant.method and quant.bits are what the cell asked for; `quant` (int4, gptq:4)
    # already says both, so they split nothing. `bundle` splits configurations that share every base key.
    frame = pd.DataFrame(
        {
            "quant": ["int4", "int4", "gptq:4", "gptq:6", "int4", "int4"],
            "compressor": ["zlib", "lzma", "zlib", "zlib", "zlib", "zlib"],
            "quant.method": ["int4", "int4", "gptq", "gptq", "int4", "int4"],
            "quant.bits": [None, None, 4, 6, None, None],
            "bundle": ["none", "none", "none", "none", "no_xsa", "no_xsa"],
            "train.max_steps": [800] * 6,  # constant: kept for the "common to all rows" line
        }
    )
    assert key_columns(frame) == ["quant", "compressor", "bundle", "train.max_steps"]


def test_ablation_table_pairs_each_switch_with_the_full_stack_by_seed():
    from golf.report import ablation_table

    # Two stacks; seeds 1 and 2 ran everything, seed 3 only an ablation (no full-stack partner: left out).
    rows = [
        ("tiny1127", "none", 1, 2.30, 1000), ("tiny1127", "none", 2, 2.32, 1000),
        ("tiny1127", "xsa", 1, 2.33, 990), ("tiny1127", "xsa", 2, 2.34, 1010), ("tiny1127", "xsa", 3, 9.0, 5),
        ("tiny1550", "none", 1, 2.40, 2000), ("tiny1550", "none", 2, 2.44, 2000),
        ("tiny1550", "ema", 1, 2.38, 2000), ("tiny1550", "ema", 2, 2.43, 2000),
    ]
    frame = pd.DataFrame(rows, columns=["preset", "bundle", "seed", "val_bpb", "bytes_total"])
    table = ablation_table(frame).set_index(["preset", "ablate"])
    assert sorted(table.index) == [("tiny1127", "xsa"), ("tiny1550", "ema")]
    xsa = table.loc[("tiny1127", "xsa")]
    # deltas +0.03 and +0.02: mean 0.025, sample std sqrt(((0.005)^2 * 2) / 1) = 0.0070711
    assert xsa["n_pairs"] == 2 and xsa["seeds"] == "1 2"
    assert xsa["delta_mean"] == pytest.approx(0.025)
    assert xsa["delta_std"] == pytest.approx(math.sqrt(2 * 0.005**2))
    # paired t = 0.025 / (0.0070711 / sqrt(2)) = 5.0 with 1 df: p = 1 - 2 * atan(5) / pi
    assert xsa["p_value"] == pytest.approx(1 - 2 * math.atan(5.0) / math.pi)
    assert xsa["val_bpb_full"] == pytest.approx(2.31) and xsa["val_bpb_ablated"] == pytest.approx(2.335)
    assert xsa["delta_bytes"] == pytest.approx(0.0)
    ema = table.loc[("tiny1550", "ema")]
    assert ema["delta_mean"] == pytest.approx(-0.015) and ema["deltas"] == "-0.02000 -0.01000"
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()), nan_ok=True)
    assert xsa["mde"] == pytest.approx(stats.paired_mde(xsa["delta_std"], 2))
    # No `bundle` column: no table.
    assert ablation_table(frame.drop(columns="bundle")).empty
    # Two runs of seed 1 on each side (two probe splits of one base): averaged, still two pairs of seeds.
    extra = pd.DataFrame([("tiny1127", "none", 1, 2.28, 1000), ("tiny1127", "xsa", 1, 2.36, 990)],
                         columns=frame.columns)
    twice = ablation_table(pd.concat([frame, extra])).set_index(["preset", "ablate"]).loc[("tiny1127", "xsa")]
    assert twice["n_pairs"] == 2 and twice["seeds"] == "1 2"
    assert twice["deltas"] == "+0.05500 +0.02000"  # seed 1: (2.33 + 2.36) / 2 - (2.30 + 2.28) / 2
    # Probe splits: a split is paired with the same split of the full stack. Split 2 of seed 1 ran only with
    # the switch off (a partial grid): it is left out, not compared with split 1's documents.
    split = pd.DataFrame([("tiny1127", "none", 1, 1, 2.30, 1000), ("tiny1127", "xsa", 1, 1, 2.33, 990),
                          ("tiny1127", "xsa", 1, 2, 2.90, 990), ("tiny1127", "none", 2, 1, 2.32, 1000),
                          ("tiny1127", "xsa", 2, 1, 2.34, 1010)],
                         columns=["preset", "bundle", "seed", "ttt.probe_split", "val_bpb", "bytes_total"])
    by_split = ablation_table(split).set_index(["preset", "ablate"]).loc[("tiny1127", "xsa")]
    assert by_split["n_pairs"] == 2 and by_split["deltas"] == "+0.03000 +0.02000"
    assert by_split["val_bpb_ablated"] == pytest.approx(2.335)
    # Swaps: seed 1's full stack ran split 1 both ways, its switch-off run unswapped only: not like with like,
    # left out (seed 2 ran both ways on both sides and stays).
    swap = pd.DataFrame([("tiny1127", "none", 1, 1, False, 2.30, 1000), ("tiny1127", "none", 1, 1, True, 2.40, 1000),
                         ("tiny1127", "xsa", 1, 1, False, 2.33, 990),
                         ("tiny1127", "none", 2, 1, False, 2.32, 1000), ("tiny1127", "none", 2, 1, True, 2.36, 1000),
                         ("tiny1127", "xsa", 2, 1, False, 2.34, 1010), ("tiny1127", "xsa", 2, 1, True, 2.38, 1010)],
                        columns=["preset", "bundle", "seed", "ttt.probe_split", "ttt.probe_swap", "val_bpb",
                                 "bytes_total"])
    by_swap = ablation_table(swap).set_index(["preset", "ablate"]).loc[("tiny1127", "xsa")]
    assert by_swap["seeds"] == "2" and by_swap["deltas"] == "+0.02000"


def test_ablation_table_each_value_against_its_own_reference_within_a_filter():
    from golf.report import ablation_table

    # quant_budget's question: each quantizer against round-to-nearest at its own width. The compressor does
    # not change val_bpb, so without `where` each comparison would appear once per compressor.
    rows = []
    for comp in ("zlib", "brotli"):
        for seed, base in ((1, 2.0), (2, 2.1), (3, 2.2)):
            rows += [("int4", comp, seed, base + 0.30), ("gptq:4", comp, seed, base + 0.30 - 0.01 * seed),
                     ("int6", comp, seed, base + 0.02), ("gptq:6", comp, seed, base + 0.02 - 0.001 * seed)]
    frame = pd.DataFrame(rows, columns=["quant", "compressor", "seed", "val_bpb"]).assign(bytes_total=1000)
    pairs = {"gptq:4": "int4", "gptq:6": "int6"}
    table = ablation_table(frame, "quant", pairs, where={"compressor": "brotli"})
    assert table["ablate"].tolist() == ["gptq:4", "gptq:6"] and table["against"].tolist() == ["int4", "int6"]
    assert set(table["compressor"]) == {"brotli"}
    four = table.set_index("ablate").loc["gptq:4"]
    assert four["deltas"] == "-0.01000 -0.02000 -0.03000" and four["delta_mean"] == pytest.approx(-0.02)
    assert four["val_bpb_full"] == pytest.approx(2.4)  # int4 over the three seeds
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()))
    # Without the filter every comparison comes once per compressor: a family twice the size.
    assert len(ablation_table(frame, "quant", pairs)) == 4
    # A value not in the mapping is not compared; an unknown filter column is an error, not an empty table.
    assert "int6" not in set(table["ablate"])
    with pytest.raises(GolfError, match="no column 'compresor'"):
        ablation_table(frame, "quant", pairs, where={"compresor": "brotli"})
    with pytest.raises(GolfError, match="no scored run has compressor='brotly'"):
        ablation_table(frame, "quant", pairs, where={"compressor": "brotly"})


def test_official_gain_and_per_seed_slopes(tmp_path):
    """With val_bpb_base in the results, the gap table reports the official gain and tests legal vs
    illegal on it; slopes come one per seed and are tested across seeds."""
    study_dir = tmp_path / "ttt_gap"
    shutil.copytree(FIXTURES / "ttt_gap", study_dir)
    official = {}
    for path in sorted((study_dir / "runs").glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # the truncated fixture
        illegal = 0.03 if result["ttt"]["strategy"] == "prequant_val" else 0.0
        result["eval"]["val_bpb_base"] = result["eval"]["val_bpb"] + 0.001 * (result["seed"] % 11) + illegal
        path.write_text(json.dumps(result))
        gain = result["eval"]["val_bpb"] - result["eval"]["val_bpb_base"]
        official.setdefault(result["ttt"]["strategy"], []).append(gain)
    write_report(study_dir, TTT_SECTIONS)
    gap = pd.read_csv(study_dir / "gap.csv").set_index("strategy")
    for strategy in ("score_first", "prequant_val"):
        assert gap.loc[strategy, "gain_official_mean"] == pytest.approx(statistics.mean(official[strategy]))
    assert "official gain" in (study_dir / "gap.md").read_text()

    slopes = pd.read_csv(study_dir / "slopes.csv")
    per_seed = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] == "prequant_val":
            pe = r["ttt"]["per_epoch"]
            xs = [e["epoch"] for e in pe[1:]]
            gains = [e["val_bpb_adapted"] - pe[0]["val_bpb_adapted"] for e in pe[1:]]
            per_seed.append(stats.linear_fit(xs, gains)["slope"])
    row = slopes[(slopes["strategy"] == "prequant_val") & (slopes["half"] == "A")].iloc[0]
    assert row["seed_slope_mean"] == pytest.approx(statistics.mean(per_seed), rel=1e-9)
    assert row["seed_slope_p_value"] == pytest.approx(stats.one_sample_t_test(per_seed)["p_value"], rel=1e-9)
    # same epochs in every seed: the pooled OLS slope equals the mean of the per-seed slopes
    assert row["slope"] == pytest.approx(row["seed_slope_mean"], rel=1e-9)


def test_sections_are_checked_and_name_no_study():
    with pytest.raises(GolfError, match="unknown report section 'ut_curve'"):
        parse_sections(["ut_curve"], "studies/x.yaml")
    with pytest.raises(GolfError, match="curve takes options x, log2; .*missing: \\['x'\\]"):
        parse_sections(["curve"], "studies/x.yaml")
    with pytest.raises(GolfError, match="unknown: \\['axes'\\]"):
        parse_sections([{"ablation": {"axes": "bundle"}}], "studies/x.yaml")
    assert parse_sections(False, "x") == [] and parse_sections(None, "x") == [("summary", {})]
    assert parse_sections(["gap"], "x") == [("summary", {}), ("gap", {})]
    # The report package names no study: no study file stem appears in its source.
    studies = [p.stem for p in (Path(__file__).parent.parent / "studies").glob("*.yaml")]
    source = "\n".join(p.read_text() for p in (Path(__file__).parent.parent / "golf" / "report").glob("*.py"))
    assert studies and not [name for name in studies if name in source]
    assert set(SECTIONS) >= {"summary", "ttt_curves", "gap", "slopes", "curve", "ablation", "frontier"}


def test_paired_section_pairs_within_units_and_corrects_the_family(tmp_path):
    study_dir = tmp_path / "ttt_gap"
    shutil.copytree(FIXTURES / "ttt_gap", study_dir)
    official: dict[str, dict[int, float]] = {}
    halves: dict[str, dict[int, tuple[float, float]]] = {}
    for path in sorted((study_dir / "runs").glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # the truncated fixture
        strategy, seed = result["ttt"]["strategy"], result["seed"]
        extra = 0.001 * (seed % 13) if strategy == "prequant_val" else 0.0  # the illegal one gains more, unevenly
        result["eval"]["val_bpb_base"] = result["eval"]["val_bpb"] + 0.002 + 0.0005 * (seed % 11) + extra
        path.write_text(json.dumps(result))
        if strategy == "none":
            continue
        official.setdefault(strategy, {})[seed] = result["eval"]["val_bpb"] - result["eval"]["val_bpb_base"]
        first, last = result["ttt"]["per_epoch"][0], result["ttt"]["per_epoch"][-1]
        halves.setdefault(strategy, {})[seed] = (last["val_bpb_adapted"] - first["val_bpb_adapted"],
                                                 last["val_bpb_heldout"] - first["val_bpb_heldout"])
    write_report(study_dir, parse_sections(["paired"], "test"))
    table = pd.read_csv(study_dir / "paired.csv")
    memo = table[table["comparison"].str.startswith("memorization")].set_index("config")
    seeds = sorted(halves["prequant_val"])
    ref = stats.paired_t_test([halves["prequant_val"][s][0] for s in seeds], [halves["prequant_val"][s][1] for s in seeds])
    row = memo.loc["strategy=prequant_val, legal=False"]
    assert row["n_units"] == 3 and row["p_value"] == pytest.approx(ref["p_value"], rel=1e-9)
    assert row["mean_diff"] == pytest.approx(ref["mean_diff"], rel=1e-9)
    versus = table[table["test"] == "illegal_vs_legal"].iloc[0]
    assert versus["strategy"] == "prequant_val" and versus["versus"] == "score_first"
    common = sorted(set(official["prequant_val"]) & set(official["score_first"]))
    diff = stats.paired_t_test([official["prequant_val"][s] for s in common], [official["score_first"][s] for s in common])
    assert versus["n_units"] == len(common) and versus["p_value"] == pytest.approx(diff["p_value"], rel=1e-9)
    assert 0 < diff["p_value"] < 1
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()), nan_ok=True)
    assert set(table["comparison"].str.split(" ").str[0]) == {"memorization", "official"}
    text = (study_dir / "paired.md").read_text()
    assert "p (Holm)" in text and ("not resolved at this power" in text or "resolved" in text)


def test_trend_section_blocks_by_unit_across_separate_epoch_runs(tmp_path):
    # Separate runs per epoch count, made from the fixture's runs cut after E epochs (E = 1, 2, 3).
    study_dir = tmp_path / "epochs"
    by_unit: dict[int, dict[int, float]] = {}
    for path in sorted((FIXTURES / "ttt_gap" / "runs").glob("prequant_val_*/result.json")):
        result = json.loads(path.read_text())
        for e in (1, 2, 3):
            cut = json.loads(json.dumps(result))
            cut["ttt"]["epochs"], cut["ttt"]["per_epoch"] = e, result["ttt"]["per_epoch"][: e + 1]
            cut["run_id"] = f"{result['run_id']}_E{e}"
            cut["study_params"] = {"preset": "tiny", "seed": result["seed"], "bundle": "none",
                                   "overrides": {"ttt.epochs": e}}
            (study_dir / "runs" / cut["run_id"]).mkdir(parents=True)
            (study_dir / "runs" / cut["run_id"] / "result.json").write_text(json.dumps(cut))
            pe = cut["ttt"]["per_epoch"]
            by_unit.setdefault(result["seed"], {})[e] = ((pe[-1]["val_bpb_adapted"] - pe[0]["val_bpb_adapted"])
                                                         - (pe[-1]["val_bpb_heldout"] - pe[0]["val_bpb_heldout"]))
    written = write_report(study_dir, parse_sections(["trend", "memorization_epochs"], "test"))
    assert study_dir / "figures" / "memorization_epochs.png" in written
    table = pd.read_csv(study_dir / "trend.csv")
    memo = table[table["measure"].str.startswith("memorization")].iloc[0]
    blocks = [[by_unit[s][e] for e in (1, 2, 3)] for s in sorted(by_unit)]
    up, down = stats.page_trend_test(blocks), stats.page_trend_test([[-v for v in row] for row in blocks])
    assert memo["epochs"] == "1 2 3" and memo["n_units"] == 3
    assert memo["L"] == pytest.approx(up["L"])  # two-sided: twice the smaller one-sided p, direction named
    assert memo["p_value"] == pytest.approx(min(1.0, 2 * min(up["p_value"], down["p_value"])))
    assert memo["direction"] == ("none" if down["p_value"] == up["p_value"] else
                                 "falls" if down["p_value"] < up["p_value"] else "rises")
    assert memo["n_bases"] == 3 and memo["p_bases"] == memo["p_value"]  # one unit per base: the same test


def test_trend_by_base_averages_a_seeds_splits_into_one_block():
    """Two splits per seed: Page's test over 6 unit blocks, and over 3 base blocks (a seed's splits averaged)."""
    from golf.report.paired import trend_table

    results, per_base = [], {}
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] != "prequant_val":
            continue
        for split in (1, 2):
            for e in (1, 2, 3):
                cut = json.loads(json.dumps(r))
                cut["ttt"]["epochs"], cut["ttt"]["per_epoch"] = e, r["ttt"]["per_epoch"][: e + 1]
                cut["ttt"]["per_epoch"][-1]["val_bpb_adapted"] += 0.0003 * split * (r["seed"] % 5)
                cut["run_id"] = f"{r['run_id']}_s{split}_E{e}"
                cut["study_params"] = {"preset": "tiny", "seed": r["seed"], "bundle": "none",
                                       "overrides": {"ttt.epochs": e, "ttt.probe_split": split}}
                results.append(cut)
                pe = cut["ttt"]["per_epoch"]
                contrast = ((pe[-1]["val_bpb_adapted"] - pe[0]["val_bpb_adapted"])
                            - (pe[-1]["val_bpb_heldout"] - pe[0]["val_bpb_heldout"]))
                per_base.setdefault(r["seed"], {}).setdefault(e, []).append(contrast)
    memo = trend_table(per_epoch_frame(results)).set_index("measure").loc["memorization (gain A - gain B)"]
    blocks = [[sum(per_base[s][e]) / 2 for e in (1, 2, 3)] for s in sorted(per_base)]
    up, down = stats.page_trend_test(blocks), stats.page_trend_test([[-v for v in row] for row in blocks])
    assert memo["n_units"] == 6 and memo["n_bases"] == 3
    assert memo["p_bases"] == pytest.approx(min(1.0, 2 * min(up["p_value"], down["p_value"])))


def test_a_swapped_split_is_averaged_into_its_unit_not_counted_twice(tmp_path):
    study_dir = tmp_path / "swap"
    expect: dict[int, list[float]] = {}
    for path in sorted((FIXTURES / "ttt_gap" / "runs").glob("prequant_val_*/result.json")):
        result = json.loads(path.read_text())
        for swap, shift in ((False, 0.0), (True, 0.004)):  # the swapped run: B's documents adapted on
            run = json.loads(json.dumps(result))
            run["run_id"] = f"{result['run_id']}_swap{swap}"
            run["study_params"] = {"preset": "tiny", "seed": result["seed"], "bundle": "none",
                                   "overrides": {"ttt.probe_split": 1, "ttt.probe_swap": swap}}
            for entry in run["ttt"]["per_epoch"][1:]:
                entry["val_bpb_adapted"] += shift
            (study_dir / "runs" / run["run_id"]).mkdir(parents=True)
            (study_dir / "runs" / run["run_id"] / "result.json").write_text(json.dumps(run))
            pe = run["ttt"]["per_epoch"]
            contrast = ((pe[-1]["val_bpb_adapted"] - pe[0]["val_bpb_adapted"])
                        - (pe[-1]["val_bpb_heldout"] - pe[0]["val_bpb_heldout"]))
            expect.setdefault(result["seed"], []).append(contrast)
    write_report(study_dir, parse_sections(["paired"], "test"))
    row = pd.read_csv(study_dir / "paired.csv").iloc[0]
    per_unit = [sum(v) / 2 for _, v in sorted(expect.items())]
    assert row["n_units"] == 3  # three (seed, split) units, each the mean of a split and its swap
    assert row["mean_diff"] == pytest.approx(sum(per_unit) / 3, rel=1e-9)
    assert row["p_value"] == pytest.approx(stats.one_sample_t_test(per_unit)["p_value"], rel=1e-9)
    # A partial grid: one seed's swapped run missing. That unit is left out, not counted one way only.
    missing = sorted((study_dir / "runs").glob("*_swapTrue"))[0]
    gone = json.loads((missing / "result.json").read_text())["seed"]
    shutil.rmtree(missing)
    write_report(study_dir, parse_sections(["paired"], "test"))
    row = pd.read_csv(study_dir / "paired.csv").iloc[0]
    kept = [sum(v) / 2 for seed, v in sorted(expect.items()) if seed != gone]
    assert row["n_units"] == 2 and row["mean_diff"] == pytest.approx(sum(kept) / 2, rel=1e-9)


def test_one_section_twice_under_two_names(ut_report, tmp_path):
    study_dir = tmp_path / "ut"
    shutil.copytree(FIXTURES / "ut_loops", study_dir)
    sections = parse_sections([{"ablation": {"axis": "model.ut_loops", "reference": 2, "name": "loops"}},
                               {"ablation": {"axis": "model.ut_curriculum_frac", "reference": 0.5,
                                             "name": "curriculum"}}], "test")
    write_report(study_dir, sections)
    loops = pd.read_csv(study_dir / "loops.csv")
    assert sorted(loops["model.ut_curriculum_frac"]) == [0.0, 0.5] and set(loops["ablate"]) == {6}
    # loops 6 vs 2 at curriculum 0.5, paired by seed, from the fixture's own numbers
    runs = {(r["study_params"]["overrides"]["model.ut_loops"], r["study_params"]["overrides"]["model.ut_curriculum_frac"],
             r["seed"]): r["eval"]["val_bpb"] for r in fixture_results("ut_loops")}
    deltas = [runs[(6, 0.5, s)] - runs[(2, 0.5, s)] for s in (42, 1337)]
    row = loops[loops["model.ut_curriculum_frac"] == 0.5].iloc[0]
    assert row["delta_mean"] == pytest.approx(sum(deltas) / 2, rel=1e-9)
    assert (study_dir / "curriculum.md").read_text().startswith("# ut: each model.ut_curriculum_frac against")
    with pytest.raises(GolfError, match="listed twice"):
        parse_sections([{"ablation": {"axis": "bundle"}}, "ablation"], "test")


def test_level_trend_is_blocked_by_seed_and_two_sided():
    from golf.report.paired import level_trend_table

    rows = [{"seed": s, "model.ut_loops": n, "val_bpb": 2.0 + 0.01 * n + 0.1 * (s % 3), "strategy": "none"}
            for s in (1, 2, 3) for n in (1, 2, 4, 8)]
    frame = pd.DataFrame(rows)
    table = level_trend_table(frame, "model.ut_loops")
    row = table.iloc[0]
    assert row["direction"] == "increasing" and row["n_seeds"] == 3 and row["levels"] == "1 2 4 8"
    ref = stats.page_trend_test([[r["val_bpb"] for r in rows if r["seed"] == s] for s in (1, 2, 3)])
    assert row["L"] == ref["L"] and row["p_value"] == pytest.approx(min(1.0, 2 * ref["p_value"]))
    falling = level_trend_table(frame.assign(val_bpb=-frame["val_bpb"]), "model.ut_loops").iloc[0]
    assert falling["direction"] == "decreasing" and falling["p_value"] == pytest.approx(row["p_value"])


def test_bases_table_sets_each_base_against_its_own_count_models():
    from golf.report.tables import bases_table

    # The committed quant_budget runs (real runs of golf, not fixtures): 126 runs on 3 tiny bases. Recomputed
    # from each result.json by hand: a seed's margin is the mean over its runs of val_bpb_base - baseline.
    study = Path(__file__).resolve().parent.parent / "results" / "quant_budget"
    results = [json.loads(p.read_text()) for p in sorted((study / "runs").glob("*/result.json"))]
    assert len(results) == 126
    table = bases_table(load_results(study)).set_index("baseline")
    assert list(table.index) == ["unigram", "bigram_kn", "trigram_kn"]
    for name in table.index:
        by_seed: dict[int, list[float]] = {}
        for r in results:
            by_seed.setdefault(r["seed"], []).append(r["eval"]["val_bpb_base"] - r["eval"]["baselines"][name])
        margins = [sum(v) / len(v) for _, v in sorted(by_seed.items())]
        row = table.loc[name]
        assert row["n_seeds"] == 3 and row["n_bases"] == 3 and row["seeds"] == "7 42 1337"
        assert row["margin_mean"] == pytest.approx(sum(margins) / 3, abs=1e-12)
        assert row["margin_std"] == pytest.approx(statistics.stdev(margins), rel=1e-9)
        assert row["p_value"] == pytest.approx(stats.one_sample_t_test(margins)["p_value"], rel=1e-9)
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()))
    assert table.loc["unigram", "margin_mean"] < 0 < table.loc["trigram_kn", "margin_mean"]

    # Two presets; seed 1's two runs of one base scored different windows (a probe split reorders the
    # stream): their margins are averaged, so the seed counts once.
    rows = [("small", 1, 1.80, 2.20, 1.78, "a"), ("small", 1, 1.90, 2.32, 1.86, "a"),
            ("small", 2, 1.83, 2.25, 1.80, "b"), ("tiny", 1, 2.20, 2.15, 1.75, "c"),
            ("tiny", 2, 2.22, 2.15, 1.75, "d"), ("small", 3, 1.85, math.nan, math.nan, "e")]  # seed 3: no baselines
    frame = pd.DataFrame(rows, columns=["preset", "seed", "val_bpb_base", "bigram_kn", "trigram_kn", "base_key"])
    table = bases_table(frame).set_index(["preset", "baseline"])
    small = table.loc[("small", "trigram_kn")]
    assert small["n_seeds"] == 2 and small["n_bases"] == 2 and small["seeds"] == "1 2"  # seed 3 left out
    assert small["margins"] == "+0.03000 +0.03000" and small["margin_std"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc[("tiny", "bigram_kn"), "margin_mean"] == pytest.approx(0.06)
    assert bases_table(frame.drop(columns="val_bpb_base")).empty


def test_runs_with_the_probe_off_keep_their_official_gain_in_every_table(tmp_path):
    """The real protocol (ttt.probe=false) records no per-epoch points; its official gain (val_bpb after TTT
    - the float base's) must still reach the gap and paired tables, next to the probe runs' contrasts."""
    from golf.report.paired import paired_table
    from golf.report.tables import gap_table

    results = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] == "none":
            continue
        seed = r["seed"]
        r["eval"]["val_bpb_base"] = r["eval"]["val_bpb"] + 0.003 + 0.0004 * (seed % 7)
        r["study_params"] = {"preset": "tiny", "seed": seed, "bundle": "none", "overrides": {"ttt.probe": True}}
        off = json.loads(json.dumps(r))
        off["run_id"] += "_noprobe"
        off["ttt"]["per_epoch"] = []
        off["eval"]["val_bpb"] -= 0.001 * (seed % 5) if r["ttt"]["strategy"] == "prequant_val" else 0.0
        off["study_params"]["overrides"] = {"ttt.probe": False}
        results += [r, off]
    frame = per_epoch_frame(results)
    alone = frame[frame["run_id"].str.endswith("_noprobe")]
    assert len(alone) == len(results) // 2 and (alone["epoch"] == 3).all() and alone["gain"].isna().all()
    gap = gap_table(frame).set_index(["strategy", "ttt.probe"])
    off_row = gap.loc[("prequant_val", False)]
    expected = [r["eval"]["val_bpb"] - r["eval"]["val_bpb_base"] for r in results
                if r["run_id"].endswith("_noprobe") and r["ttt"]["strategy"] == "prequant_val"]
    assert off_row["gain_official_mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert math.isnan(off_row["gain_adapted_mean"]) and math.isnan(off_row["pvalue_adapted_vs_heldout"])
    table = paired_table(frame)
    probe_off = table[table["ttt.probe"] == False]  # noqa: E712 (a column of booleans)
    assert sorted(probe_off["test"]) == ["illegal_vs_legal", "official", "official"]
    versus = probe_off[probe_off["test"] == "illegal_vs_legal"].iloc[0]
    assert versus["n_units"] == 3  # the seeds both strategies ran: 7, 42, 1337
    assert (table[table["ttt.probe"] == True]["test"] == "memorization").sum() == 2  # noqa: E712


def test_scale_section_pairs_units_across_presets_in_order_of_size(tmp_path):
    from golf.report.frame import _results_frame
    from golf.report.paired import scale_table, scale_values

    # prequant_val on three presets, each (seed) unit's A gain falling with size by a seed-specific amount.
    results = []
    sizes = {"medium": 300, "tiny": 100, "small": 200}  # listed out of order: the table orders by params
    for preset, params in sizes.items():
        for r in fixture_results("ttt_gap"):
            if r["ttt"]["strategy"] == "score_first":  # the legal side of the gap: the real protocol only
                legal = json.loads(json.dumps(r))
                legal["run_id"] += f"_{preset}_noprobe"
                legal["model"] = {"preset": preset, "params": params}
                legal["ttt"]["per_epoch"] = []
                legal["eval"]["val_bpb_base"] = legal["eval"]["val_bpb"] + 0.001 * params / 100 * (legal["seed"] % 4 + 1)
                legal["study_params"] = {"preset": preset, "seed": legal["seed"], "bundle": "none",
                                         "overrides": {"ttt.probe": False}}
                legal["config"]["ttt"]["probe"] = False
                # the same legal runs under another bundle: a different setting, never paired with prequant_val's
                other = json.loads(json.dumps(legal))
                other["run_id"] += "_other"
                other["eval"]["val_bpb"] -= 0.05
                other["study_params"]["bundle"] = "other"
                # and with the probe on but no probe passes (as lora_score_first): no measure at all
                probed = json.loads(json.dumps(legal))
                probed["run_id"] += "_probed"
                probed["study_params"]["overrides"] = {"ttt.probe": True}
                probed["config"]["ttt"]["probe"] = True
                results += [legal, other, probed]
            if r["ttt"]["strategy"] != "prequant_val":
                continue
            r = json.loads(json.dumps(r))
            seed, k = r["seed"], params // 100
            r["run_id"] += f"_{preset}"
            r["model"] = {"preset": preset, "params": params}
            r["eval"]["val_bpb_base"] = r["eval"]["val_bpb"] + 0.01
            for point in r["ttt"]["per_epoch"][1:]:
                point["val_bpb_adapted"] -= 0.002 * k * (1 + (seed % 3))
            r["study_params"] = {"preset": preset, "seed": seed, "bundle": "none", "overrides": {"ttt.probe": True}}
            off = json.loads(json.dumps(r))  # the real protocol: no probe points, the official gain only
            off["run_id"] += "_noprobe"
            off["ttt"]["per_epoch"] = []
            off["eval"]["val_bpb"] -= 0.001 * k
            off["study_params"]["overrides"] = {"ttt.probe": False}
            off["config"]["ttt"]["probe"] = False
            results += [r, off]
    per_epoch = per_epoch_frame(results)
    frame = _results_frame(results)
    table = scale_table(scale_values(per_epoch, frame))
    memo = table[table["measure"].str.startswith("memorization")].set_index("test")
    assert memo.loc["trend", "levels"] == "tiny < small < medium" and memo.loc["trend", "n_units"] == 3
    contrast = {}
    for r in results:
        if not r["ttt"]["per_epoch"]:
            continue
        first, last = r["ttt"]["per_epoch"][0], r["ttt"]["per_epoch"][-1]
        contrast[(r["model"]["preset"], r["seed"])] = ((last["val_bpb_adapted"] - first["val_bpb_adapted"])
                                                       - (last["val_bpb_heldout"] - first["val_bpb_heldout"]))
    seeds = sorted({s for _, s in contrast})
    ref = stats.paired_t_test([contrast[("medium", s)] for s in seeds], [contrast[("tiny", s)] for s in seeds])
    assert memo.loc["medium - tiny", "mean_diff"] == pytest.approx(ref["mean_diff"], rel=1e-9)
    assert memo.loc["medium - tiny", "p_value"] == pytest.approx(ref["p_value"], rel=1e-9)
    assert list(memo.index) == ["trend", "small - tiny", "medium - small", "medium - tiny"]  # each step, then all
    step = stats.paired_t_test([contrast[("medium", s)] for s in seeds], [contrast[("small", s)] for s in seeds])
    assert memo.loc["medium - small", "mean_diff"] == pytest.approx(step["mean_diff"], rel=1e-9)
    assert memo.loc["medium - small", "p_value"] == pytest.approx(step["p_value"], rel=1e-9)
    blocks = [[-contrast[(p, s)] for p in ("tiny", "small", "medium")] for s in seeds]
    assert memo.loc["trend", "direction"] == "decreasing"
    assert memo.loc["trend", "p_value"] == pytest.approx(min(1.0, 2 * stats.page_trend_test(blocks)["p_value"]))
    assert memo.loc["trend", "p_min"] == pytest.approx(2 / 6**3)  # 3 units, 3 levels
    # the official gain only where the probe was off: 0.001 lower per 100 parameters, in every unit
    official = table[(table["measure"] == "official gain") & (table["strategy"] == "prequant_val")].set_index("test")
    assert list(official["ttt.probe"]) == [False] * 4
    assert official.loc["medium - tiny", "mean_diff"] == pytest.approx(-0.002, abs=1e-12)
    # each half's gain where the probe ran: A falls with size (as built), B does not move
    for measure, col in (("gain on adapted half A", "val_bpb_adapted"), ("gain on held-out half B", "val_bpb_heldout")):
        half = table[table["measure"] == measure].set_index("test")
        gain = {(r["model"]["preset"], r["seed"]): r["ttt"]["per_epoch"][-1][col] - r["ttt"]["per_epoch"][0][col]
                for r in results if r["ttt"]["per_epoch"]}
        ref = stats.paired_t_test([gain[("medium", s)] for s in seeds], [gain[("tiny", s)] for s in seeds])
        assert half.loc["medium - tiny", "mean_diff"] == pytest.approx(ref["mean_diff"], rel=1e-9, abs=1e-12)
    # the legal-illegal gap of the real protocol: prequant_val's official gain - score_first's, unit by unit
    gap = table[table["measure"] == "illegal - legal official gain"].set_index("test")
    assert list(gap["strategy"]) == ["prequant_val"] * 4 and list(gap["versus"]) == ["score_first"] * 4
    assert set(gap["bundle"]) == {"none"} and set(gap["versus_setting"]) == {"epochs=3"}
    assert not ((table["strategy"] == "score_first") & (table["ttt.probe"] == True)).any()  # noqa: E712
    off = {(r["model"]["preset"], r["seed"], r["ttt"]["strategy"]): r["eval"]["val_bpb"] - r["eval"]["val_bpb_base"]
           for r in results if not r["ttt"]["per_epoch"]}
    diff = {(p, s): off[(p, s, "prequant_val")] - off[(p, s, "score_first")] for p in sizes for s in seeds}
    ref = stats.paired_t_test([diff[("medium", s)] for s in seeds], [diff[("tiny", s)] for s in seeds])
    assert gap.loc["medium - tiny", "mean_diff"] == pytest.approx(ref["mean_diff"], rel=1e-9)
    assert gap.loc["medium - tiny", "p_value"] == pytest.approx(ref["p_value"], rel=1e-9)
    for _, part in table.groupby(["measure", table["test"] == "trend"]):  # Holm within each measure and kind
        assert part["p_holm"].tolist() == pytest.approx(stats.holm(part["p_value"].tolist()), nan_ok=True)
    assert table.groupby(["measure", table["test"] == "trend"]).ngroups == 10  # 5 measures x 2 kinds
    study = tmp_path / "scale_study"
    for r in results:
        (study / "runs" / r["run_id"]).mkdir(parents=True)
        (study / "runs" / r["run_id"] / "result.json").write_text(json.dumps(r))
    write_report(study, parse_sections(["scale"], "test"))
    assert (study / "figures" / "scale.png").exists()
    rows = [line for line in (study / "scale.md").read_text().splitlines() if line.startswith("|")]
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in rows}) == 1 and len(rows) == 2 + len(table)


def test_markdown_cells_escape_the_column_bar():
    from golf.report.tables import _md_table

    text = _md_table(["a", "b|c"], [["x | y", "z"]])
    for line in text.splitlines():  # every line has the 3 column bars of 2 columns, the cell's own escaped
        assert len(re.findall(r"(?<!\\)\|", line)) == 3, line
    assert "x \\| y" in text and "b\\|c" in text


def test_scale_rows_also_test_with_one_value_per_base_model():
    """Two probe splits per seed share the seed's base: the `last - first` row tests over the 6 units and
    also over the 3 bases (each seed's splits averaged), and scale.md shows that column."""
    from golf.report.paired import scale_md, scale_table

    unit_ids = [(s, k) for s in (1, 2, 3) for k in (1, 2)]
    small = [0.010, 0.030, 0.020, 0.010, 0.015, 0.035]
    large = [0.000, 0.031, 0.001, 0.022, 0.004, 0.040]
    def per(**cols):
        return {lv: dict(zip(unit_ids, v)) for lv, v in cols.items()}

    item = {"where": {"strategy": "prequant_val"}, "config": "prequant_val", "measure": "official gain",
            "levels": ["small", "medium"], "per": per(small=small, medium=large)}
    row = scale_table([item]).iloc[0]
    diffs = [a - b for a, b in zip(large, small)]
    assert row["n_units"] == 6 and row["n_bases"] == 3
    assert row["p_value"] == pytest.approx(stats.one_sample_t_test(diffs)["p_value"])
    per_base = [(diffs[i] + diffs[i + 1]) / 2 for i in (0, 2, 4)]
    assert row["p_bases"] == pytest.approx(stats.one_sample_t_test(per_base)["p_value"])
    assert row["p_bases"] != pytest.approx(row["p_value"])
    assert row["p_bases_holm"] == pytest.approx(row["p_bases"])  # one t-test row: Holm leaves it
    assert "p by base (Holm)" in scale_md("test", scale_table([item]), "preset")
    assert row["n_splits"] == 0 and "p by split" not in scale_md("test", scale_table([item]), "preset")
    # split k is the same documents for every seed: with the split's place in the unit given, the row also
    # tests one value per split (its 3 bases averaged)
    crossed = scale_table([{**item, "split_at": 1}]).iloc[0]
    per_split = [sum(diffs[i] for i in (k, k + 2, k + 4)) / 3 for k in (0, 1)]
    assert crossed["n_splits"] == 2 and crossed["p_splits"] == pytest.approx(
        stats.one_sample_t_test(per_split)["p_value"])
    assert "p by split (Holm)" in scale_md("test", scale_table([{**item, "split_at": 1}]), "preset")
    # three levels: Page's trend over the 6 unit blocks and over the 3 base blocks (splits averaged)
    mid = [0.005, 0.030, 0.010, 0.015, 0.010, 0.038]
    three = {**item, "levels": ["tiny", "small", "medium"], "per": per(tiny=small, small=mid, medium=large)}
    trend = scale_table([three]).set_index("test").loc["trend"]
    blocks = [[(col[i] + col[i + 1]) / 2 for col in (small, mid, large)] for i in (0, 2, 4)]
    up = stats.page_trend_test(blocks)["p_value"]
    down = stats.page_trend_test([[-v for v in b] for b in blocks])["p_value"]
    assert trend["n_bases"] == 3 and trend["p_bases"] == pytest.approx(min(1.0, 2 * min(up, down)))
    # a partial grid: medium lacks seed 3's two units; each test takes the units its own levels share
    part = {**three, "per": {**three["per"], "medium": dict(list(three["per"]["medium"].items())[:4])}}
    rows = scale_table([part]).set_index("test")
    assert rows.loc["small - tiny", "n_units"] == 6 and rows.loc["medium - small", "n_units"] == 4
    assert rows.loc["trend", "n_units"] == 4 and rows.loc["medium - tiny", "n_units"] == 4
    assert rows.loc["small - tiny", "p_value"] == pytest.approx(stats.paired_t_test(mid, small)["p_value"])


def test_data_scale_table_measures_each_doubling_against_the_trigram_of_the_same_tokens():
    """Three budgets of one preset (each its own run), two seeds, and one budget of another preset (no row):
    per step between token counts, the change per doubling of the model, the trigram and the margin."""
    from golf.report.tables import _data_scale_md, data_scale_table

    rows = []  # preset, train.max_steps, seed, tokens, float base, trigram, bigram
    for seed, shift in ((1, 0.00), (2, 0.02)):
        rows += [("medium", 130, seed, 2_000_000, 2.30 + shift, 2.10, 2.40),
                 ("medium", 259, seed, 4_000_000, 2.05 + shift / 2, 1.95, 2.32),
                 ("medium", 518, seed, 8_000_000, 1.80 - shift, 1.80, 2.24),
                 ("tiny", 200, seed, 800_000, 2.2, 2.0, 2.3)]
    frame = pd.DataFrame(rows, columns=["preset", "train.max_steps", "seed", "train_tokens", "val_bpb_base",
                                        "trigram_kn", "bigram_kn"])
    table = data_scale_table(frame)
    assert set(table["preset"]) == {"medium"} and len(table) == 3  # two doublings and first -> last
    first = table.iloc[0]
    assert (first["tokens_from"], first["tokens_to"], first["doublings"]) == (2_000_000, 4_000_000, 1.0)
    # seed 1: model -0.25, trigram -0.15, margin -0.10; seed 2: model -0.26, margin -0.11
    assert first["changes"] == "-0.10000 -0.11000"
    assert first["model_per_doubling"] == pytest.approx(-0.255) and first["trigram_per_doubling"] == pytest.approx(-0.15)
    assert first["bigram_per_doubling"] == pytest.approx(-0.08)
    assert first["p_value"] == pytest.approx(stats.one_sample_t_test([-0.10, -0.11])["p_value"])
    whole = table.iloc[2]
    assert whole["doublings"] == pytest.approx(2.0)
    # seed 1: margin 0.20 -> 0.00 over 2 doublings = -0.10; seed 2: 0.22 -> -0.02 = -0.12
    assert whole["changes"] == "-0.10000 -0.12000"
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"].tolist()))
    assert "margin change per doubling" in _data_scale_md("test", frame, table)
    # one token count per configuration: nothing to compare
    assert data_scale_table(frame[frame["train.max_steps"].isin([200, 518])]).empty
    # no bigram in the results: its column is NaN, the rest stands
    no_bigram = data_scale_table(frame.drop(columns="bigram_kn"))
    assert no_bigram["bigram_per_doubling"].isna().all() and no_bigram["changes"].tolist() == table["changes"].tolist()
    # a train.* setting that is not the budget (a learning rate) stays a key: two configurations, not one
    lr = pd.concat([frame.assign(**{"train.matrix_lr": 0.04}),
                    frame[frame["preset"] == "medium"].assign(**{"train.matrix_lr": 0.02, "val_bpb_base": 3.0})])
    by_lr = data_scale_table(lr)
    assert sorted(set(by_lr["train.matrix_lr"])) == [0.02, 0.04] and len(by_lr) == 6
    assert by_lr[by_lr["train.matrix_lr"] == 0.04]["changes"].tolist() == table["changes"].tolist()


def test_two_controls_of_one_legal_strategy_stay_apart_in_the_paired_table():
    """prequant_val against train_slice at its default budget and against the budget-matched one
    (ttt.slice_tokens=0): two illegal_vs_legal rows, told apart by `versus_setting`."""
    from golf.report.paired import paired_table

    results = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] == "none":
            continue
        r["eval"]["val_bpb_base"] = r["eval"]["val_bpb"] + 0.003 + 0.0004 * (r["seed"] % 7)
        r["study_params"] = {"preset": "tiny", "seed": r["seed"], "bundle": "none", "overrides": {}}
        if r["ttt"]["strategy"] == "score_first":  # stand in for the two controls
            for slice_tokens in (None, 0):
                c = json.loads(json.dumps(r))
                c["run_id"] += f"_slice{slice_tokens}"
                c["ttt"]["strategy"] = "train_slice"
                if slice_tokens is not None:
                    c["study_params"]["overrides"]["ttt.slice_tokens"] = slice_tokens
                    c["eval"]["val_bpb"] += 0.0005
                results.append(c)
        else:
            results.append(r)
    table = paired_table(per_epoch_frame(results))
    versus = table[table["test"] == "illegal_vs_legal"].set_index("versus_setting")
    assert sorted(versus.index) == ["epochs=3; ttt.slice_tokens=0", "epochs=3; ttt.slice_tokens=None"]
    assert set(versus["versus"]) == {"train_slice"}
    assert versus.loc["epochs=3; ttt.slice_tokens=0", "mean_diff"] == pytest.approx(
        versus.loc["epochs=3; ttt.slice_tokens=None", "mean_diff"] - 0.0005)
    # The budget-matched control also runs other epochs (ttt_gap_small: 6 against the default's 3), so the
    # epoch count determines ttt.slice_tokens and the key columns drop it: the rows must still stay apart.
    for r in results:
        if r["run_id"].endswith("_slice0"):
            r["ttt"]["epochs"] = 6
    versus = paired_table(per_epoch_frame(results))
    names = sorted(versus.loc[versus["test"] == "illegal_vs_legal", "versus_setting"])
    assert names == ["epochs=3; ttt.slice_tokens=None", "epochs=6; ttt.slice_tokens=0"]


def test_summary_levels_are_over_seeds_with_a_seeds_runs_averaged_first(tmp_path):
    """Three probe splits of one seed share one base model: the summary's mean, std and CI of val_bpb take
    one value per seed (its runs averaged), so seed 7's extra runs neither weigh more nor shrink the CI."""
    from golf.report.tables import summary_table

    results, per_seed = [], {}
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] != "prequant_val":
            continue
        splits = (1, 2, 3) if r["seed"] == 7 else (1,)
        for split in splits:
            run = json.loads(json.dumps(r))
            run["run_id"] = f"{r['run_id']}_split{split}"
            run["eval"]["val_bpb"] += 0.01 * (split - 1)
            run["study_params"] = {"preset": "tiny", "seed": r["seed"], "bundle": "none",
                                   "overrides": {"ttt.probe_split": split}}
            results.append(run)
            per_seed.setdefault(r["seed"], []).append(run["eval"]["val_bpb"])
    row = summary_table(_results_frame(results)).iloc[0]
    means = [sum(v) / len(v) for _, v in sorted(per_seed.items())]
    assert row["n_seeds"] == 3 and row["n_runs"] == 5
    assert row["val_bpb_mean"] == pytest.approx(sum(means) / 3, abs=1e-12)
    assert row["val_bpb_std"] == pytest.approx(statistics.stdev(means), rel=1e-9)
    half = 4.302653 * statistics.stdev(means) / math.sqrt(3)  # t_{0.975,2}: 2 df from 3 seeds, not 4 from 5 runs
    assert row["val_bpb_ci_high"] == pytest.approx(sum(means) / 3 + half, abs=1e-8)


def test_a_study_column_a_cell_left_unset_shows_that_runs_config_value(tmp_path):
    """One grid sets ttt.probe: false, another leaves the default: the default cells read ttt.probe=True from
    their own config (not a blank a reader takes for 'off'); bundle, not a config key, stays empty."""
    results = fixture_results("ttt_gap")[:2]
    results[0]["study_params"] = {"seed": 1, "overrides": {"ttt.probe": False}, "bundle": "fast"}
    results[0]["config"]["ttt"]["probe"] = False
    results[1]["study_params"] = {"seed": 1, "overrides": {}}
    results[1]["config"]["ttt"]["probe"] = True
    frame = _results_frame(results).set_index("run_id")
    assert frame.loc[results[0]["run_id"], "ttt.probe"] == False  # noqa: E712
    assert frame.loc[results[1]["run_id"], "ttt.probe"] == True  # noqa: E712
    assert frame.loc[results[0]["run_id"], "bundle"] == "fast" and pd.isna(frame.loc[results[1]["run_id"], "bundle"])
    pe = per_epoch_frame(results).drop_duplicates("run_id").set_index("run_id")
    assert pe.loc[results[1]["run_id"], "ttt.probe"] == True  # noqa: E712


def test_paired_rows_also_test_over_base_models_when_splits_share_one(tmp_path):
    """Three splits of each of three seeds: the unit test has 9 units, the by-base test one mean per seed
    (2 df). Seeds that disagree while each seed's splits agree: resolved over units, not over bases."""
    from golf.report.paired import paired_table

    results, per_seed = [], {}
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] != "prequant_val":
            continue
        seed = r["seed"]
        for split in (1, 2, 3):
            run = json.loads(json.dumps(r))
            run["run_id"] = f"{r['run_id']}_split{split}"
            run["study_params"] = {"preset": "tiny", "seed": seed, "bundle": "none",
                                   "overrides": {"ttt.probe_split": split}}
            shift = {7: -0.012, 42: -0.002, 1337: -0.001}[seed] + 0.00001 * split  # seeds differ, splits agree
            run["ttt"]["per_epoch"][-1]["val_bpb_adapted"] = run["ttt"]["per_epoch"][0]["val_bpb_adapted"] + shift
            run["ttt"]["per_epoch"][-1]["val_bpb_heldout"] = run["ttt"]["per_epoch"][0]["val_bpb_heldout"]
            results.append(run)
            per_seed.setdefault(seed, []).append(shift)
    table = paired_table(per_epoch_frame(results))
    row = table[table["test"] == "memorization"].iloc[0]
    means = [sum(v) / 3 for _, v in sorted(per_seed.items())]
    assert row["n_units"] == 9 and row["n_bases"] == 3
    assert row["p_bases"] == pytest.approx(stats.one_sample_t_test(means)["p_value"], rel=1e-9)
    assert row["p_value"] < 0.05 < row["p_bases"]
    assert table["p_bases_holm"].tolist() == pytest.approx(stats.holm(table["p_bases"].tolist()), nan_ok=True)
    assert row["verdict"].startswith("resolved over units, not over the 3 base models")


def _crossed_runs(shift, splits=(1, 2, 3), epochs=(1, 2, 3), lr=None) -> list[dict]:
    """The fixture's prequant_val runs (3 seeds) as seeds x splits x epoch counts, each run's contrast at its
    last epoch set to shift(seed, split, e) (half B unchanged); `lr` sets ttt.lr, a configuration of its own."""
    results = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] != "prequant_val":
            continue
        for split in splits:
            for e in epochs:
                run = json.loads(json.dumps(r))
                run["run_id"] = f"{r['run_id']}_split{split}_E{e}" + (f"_lr{lr}" if lr else "")
                run["ttt"]["epochs"], run["ttt"]["per_epoch"] = e, run["ttt"]["per_epoch"][: e + 1]
                overrides = {"ttt.probe_split": split, "ttt.epochs": e, **({"ttt.lr": lr} if lr else {})}
                run["study_params"] = {"preset": "tiny", "seed": r["seed"], "bundle": "none", "overrides": overrides}
                pe = run["ttt"]["per_epoch"]
                pe[-1]["val_bpb_adapted"] = pe[0]["val_bpb_adapted"] + shift(r["seed"], split, e)
                pe[-1]["val_bpb_heldout"] = pe[0]["val_bpb_heldout"]
                results.append(run)
    return results


def test_paired_rows_also_test_over_document_splits_shared_by_the_bases(tmp_path):
    """Split k is the same documents in every seed. Splits that disagree while the seeds agree (split 3 well
    below the others, as in train_slice's contrast on ttt_epochs_small): resolved over the 9 units and
    the 3 bases, not over the 3 splits (one mean per split, 2 df); paired.md shows the by-split column. A
    configuration run on one split has no by-split test, and Holm's m counts only the rows that have one."""
    from golf.report.paired import paired_md, paired_table

    def shift(seed, split, e):
        return ({1: 0.0005, 2: 0.0004, 3: 0.0001}[split] + {7: 1e-6, 42: 3e-6, 1337: 2e-6}[seed]) * e

    one_split = _crossed_runs(lambda seed, split, e: 0.001 * e + 1e-6 * (seed % 11), splits=(1,), lr=0.01)
    table = paired_table(per_epoch_frame(_crossed_runs(shift) + one_split), match=["ttt.epochs"])
    crossed = table[table["ttt.lr"].isna()] if "ttt.lr" in table else table
    row = crossed[(crossed["test"] == "memorization") & (crossed["epochs"] == 1)].iloc[0]
    means = [sum(shift(seed, k, 1) for seed in (7, 42, 1337)) / 3 for k in (1, 2, 3)]
    assert row["n_units"] == 9 and row["n_bases"] == 3 and row["n_splits"] == 3
    assert row["p_splits"] == pytest.approx(stats.one_sample_t_test(means)["p_value"], rel=1e-9)
    assert row["p_value"] < 0.05 and row["p_bases"] < 0.05 < row["p_splits"]
    assert row["verdict"].startswith("resolved over units, not over the 3 document splits")
    single = table[table["n_splits"] == 1]
    assert len(single) > 0 and single["p_splits"].isna().all() and single["p_splits_holm"].isna().all()
    assert not single["verdict"].str.contains("document splits").any()
    tested = table["p_splits"].notna()
    m = int(tested.sum())
    smallest = table.loc[tested, "p_splits"].min()
    assert table.loc[tested, "p_splits_holm"].min() == pytest.approx(min(1.0, m * smallest))
    assert "p by split (Holm)" in paired_md("test", table)


def test_trend_by_split_blocks_each_split_across_the_bases():
    """Every base rises with E (its splits averaged) while split 3 falls: the by-base Page test sits at its
    floor (2 / 6^3 for 3 blocks and 3 counts), the by-split one is Page's test of the three split means."""
    from golf.report.paired import _page_two_sided, trend_md, trend_table

    def shift(seed, split, e):
        return {1: 0.0005 * e, 2: 0.0004 * e, 3: 0.0003 * (4 - e)}[split] + 1e-6 * {7: 1, 42: 3, 1337: 2}[seed]

    table = trend_table(per_epoch_frame(_crossed_runs(shift)))
    trend = table.set_index("measure").loc["memorization (gain A - gain B)"]
    split_blocks = [[sum(shift(seed, k, e) for seed in (7, 42, 1337)) / 3 for e in (1, 2, 3)] for k in (1, 2, 3)]
    assert trend["n_units"] == 9 and trend["n_bases"] == 3 and trend["n_splits"] == 3
    assert trend["p_bases"] == pytest.approx(2 / 216)
    assert trend["p_splits"] == pytest.approx(_page_two_sided(split_blocks)["p_value"])
    assert trend["p_splits"] > trend["p_bases"]
    assert "0.0093 for 3 blocks and 3 counts" in trend_md("test", table)


def test_gap_units_figure_draws_every_unit_of_every_configuration(tmp_path):
    """The real protocol (probe off) and the probe (3 splits per seed): the left panel joins each probe unit's
    gain on A to its gain on B, the right one shows each configuration's official gain per unit."""
    from golf.report.figures import _fig_gap_units
    from golf.report.paired import final_rows

    results = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] != "prequant_val":
            continue
        r["eval"]["val_bpb_base"] = r["eval"]["val_bpb"] + 0.003
        for split in (1, 2, 3):
            run = json.loads(json.dumps(r))
            run["run_id"] = f"{r['run_id']}_split{split}"
            run["study_params"] = {"seed": r["seed"], "overrides": {"ttt.probe_split": split}}
            run["config"]["ttt"]["probe"] = True  # the fixture predates the key; its runs had the probe on
            results.append(run)
        off = json.loads(json.dumps(r))
        off["run_id"] += "_off"
        off["ttt"]["per_epoch"] = []
        off["study_params"] = {"seed": r["seed"], "overrides": {"ttt.probe": False}}
        off["config"]["ttt"]["probe"] = False
        results.append(off)
    runs = final_rows(per_epoch_frame(results))
    fig = _fig_gap_units(runs[runs["epoch"] > 0], "test")
    left, right = fig.axes
    joined = [line for line in left.get_lines() if line.get_color() == "grey" and len(line.get_xdata()) == 2]
    assert len(joined) == 9  # 3 seeds x 3 splits, each A joined to B
    from matplotlib.collections import PathCollection

    dots = [c for c in right.collections if isinstance(c, PathCollection)]
    assert sorted(len(c.get_offsets()) for c in dots) == [3, 9]  # probe off: 3 units; probe on: 9
    assert [t.get_text() for t in right.get_xticklabels()] == ["prequant_val, ttt.probe=False",
                                                               "prequant_val, ttt.probe=True"]
    for run in results:
        (tmp_path / "units" / "runs" / run["run_id"]).mkdir(parents=True)
        (tmp_path / "units" / "runs" / run["run_id"] / "result.json").write_text(json.dumps(run))
    written = write_report(tmp_path / "units", parse_sections(["gap_units"], "test"))
    assert tmp_path / "units" / "figures" / "gap_units.png" in written
    # Each unit's line runs from A (left, red mean) to B (right, blue mean), at its own values.
    first = joined[0]
    assert first.get_xdata()[0] < first.get_xdata()[1]
    assert sorted(round(line.get_ydata()[0], 12) for line in joined) == sorted(
        round(v, 12) for v in runs.loc[runs["ttt.probe"] == True, "gain_adapted"])  # noqa: E712
    # Results without a float-base score have no official gain: that configuration is left out, no crash.
    for run in results:
        run["eval"].pop("val_bpb_base")
    bare = final_rows(per_epoch_frame(results))
    _, right = _fig_gap_units(bare[bare["epoch"] > 0], "test").axes
    assert not [c for c in right.collections if isinstance(c, PathCollection)]


def test_within_run_curves_plot_each_runs_gain_over_units_one_style_per_epoch_count():
    """ttt_curves is the within-run diagnostic: gains against each run's own epoch 0, a split and its swap
    averaged into one unit before the mean over units, and runs of different epoch counts kept apart."""
    from golf.report.figures import _fig_ttt_curves

    rows = []
    for strategy, epochs in (("prequant_val", 1), ("prequant_val", 2), ("train_slice", 2)):
        for seed in (1, 2):
            for swap in (False, True):
                run = f"{strategy}-e{epochs}-s{seed}-{swap}"
                for epoch in range(epochs + 1):
                    scale = (2 if swap else 1) * (1 if strategy == "prequant_val" else 0.5)
                    drop = 0.01 * epoch * seed * scale
                    rows.append({"run_id": run, "seed": seed, "strategy": strategy, "epochs": epochs,
                                 "legal": strategy != "prequant_val", "epoch": epoch,
                                 "ttt.probe_split": 1, "ttt.probe_swap": swap,
                                 "val_bpb": 2.0 - drop, "gain": -drop, "val_bpb_adapted": 2.1 - 2 * drop,
                                 "gain_adapted": -2 * drop, "val_bpb_heldout": 1.9, "gain_heldout": 0.0})
    fig = _fig_ttt_curves(pd.DataFrame(rows), "t")
    panel = fig.axes[0]  # all probed tokens
    lines = {line.get_label(): line for line in panel.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"prequant_val, epochs=1, illegal", "prequant_val, epochs=2, illegal",
                          "train_slice, epochs=2, legal"}
    two = lines["prequant_val, epochs=2, illegal"]
    # unit (seed s): its two runs' gains at epoch e are -0.01*e*s and -0.02*e*s, averaged -0.015*e*s;
    # the mean over seeds 1 and 2 is -0.0225*e
    assert list(two.get_xdata()) == [0, 1, 2]
    assert list(two.get_ydata()) == pytest.approx([0.0, -0.0225, -0.045])
    # the band is the t-interval over the 2 unit values (-0.015, -0.030 at epoch 1), not over the 4 runs
    band = panel.collections[[line.get_label() for line in panel.get_lines()].index(two.get_label())]
    at_one = [y for x, y in band.get_paths()[0].vertices if x == 1]
    half = stats.mean_std_ci([-0.015, -0.030], 0.95)["half_width"]
    assert max(at_one) - min(at_one) == pytest.approx(2 * half)
    assert two.get_linestyle() == "-" and lines["prequant_val, epochs=1, illegal"].get_linestyle() == "--"
    assert two.get_color() == lines["prequant_val, epochs=1, illegal"].get_color()  # one colour per strategy
    assert two.get_color() != lines["train_slice, epochs=2, legal"].get_color()
    assert "n = 2 units per point" in fig._suptitle.get_text() and "within-run" in fig._suptitle.get_text()


def test_paired_match_compares_illegal_and_legal_only_at_the_same_epoch_count():
    """By default an illegal configuration is set against every legal one (the seeds' own settings differ);
    `match: [ttt.epochs]` keeps only pairs at one epoch count, for a study whose axis is E."""
    from golf.report.paired import paired_table

    rows = []
    for strategy, legal in (("prequant_val", False), ("score_first", True)):
        for epochs in (1, 2):
            for seed in (1, 2, 3):
                gain = -0.001 * seed * epochs * (3 if not legal else 1)
                for epoch in (0, epochs):
                    g = gain if epoch else 0.0
                    rows.append({"run_id": f"{strategy}-{epochs}-{seed}", "seed": seed, "strategy": strategy,
                                 "epochs": epochs, "legal": legal, "epoch": epoch, "gain": g,
                                 "gain_adapted": 2 * g, "gain_heldout": g, "gain_official": gain})
    frame = pd.DataFrame(rows)
    crossed = paired_table(frame)
    pairs = crossed[crossed["test"] == "illegal_vs_legal"]
    assert sorted(zip(pairs["epochs"], pairs["versus_setting"])) == [
        (1, "epochs=1"), (1, "epochs=2"), (2, "epochs=1"), (2, "epochs=2")]
    matched = paired_table(frame, ["ttt.epochs"])
    pairs = matched[matched["test"] == "illegal_vs_legal"].set_index("epochs")
    assert list(pairs.index) == [1, 2] and list(pairs["versus_setting"]) == ["epochs=1", "epochs=2"]
    # at E: (-0.003 s E) - (-0.001 s E) = -0.002 s E, mean over seeds 1-3 = -0.004 E
    assert pairs["mean_diff"].tolist() == pytest.approx([-0.004, -0.008])
    assert len(matched) == len(crossed) - 2  # the same memorization and official rows, two fewer pairs
    assert matched["p_holm"].tolist() == pytest.approx(stats.holm(matched["p_value"].tolist()))
    with pytest.raises(GolfError, match="match 'ttt.lr' is not a configuration column"):
        paired_table(frame, ["ttt.lr"])


def test_trend_is_two_sided_and_names_its_direction():
    """A contrast that grows more negative with E (more memorization) 'falls'; an official gain that gets
    worse with E (TTT hurting) 'rises' and is resolved just the same, not hidden by a one-sided test."""
    from golf.report.paired import trend_table
    from golf.study.compare import _lookup_ref

    rows = []
    for seed in (1, 2, 3, 4):
        for epochs in (1, 2, 4):
            official = 0.001 * epochs + 0.0001 * seed  # gets worse with E in every unit
            adapted = -0.002 * epochs - 0.0003 * seed  # A gains more with E than B
            for epoch in (0, epochs):
                on = epoch > 0
                rows.append({"run_id": f"lora-{epochs}-{seed}", "seed": seed, "strategy": "lora_single_pass",
                             "epochs": epochs, "legal": False, "epoch": epoch, "gain": 0.0,
                             "gain_adapted": adapted if on else 0.0, "gain_heldout": 0.0,
                             "gain_official": official})
    table = trend_table(pd.DataFrame(rows)).set_index("measure")
    exact = 2 / 6**4  # the one arrangement in (3!)^4 with every unit in order, doubled
    memo, official = table.loc["memorization (gain A - gain B)"], table.loc["official gain"]
    assert memo["direction"] == "falls" and official["direction"] == "rises"
    assert memo["p_value"] == pytest.approx(exact) and official["p_value"] == pytest.approx(exact)
    assert official["mean_first"] == pytest.approx(0.00125)
    assert official["mean_last"] == pytest.approx(0.00425)
    # A conclusion names a trend row by its test and configuration, as it names a paired row.
    tables = {"trend": table.reset_index()}
    assert _lookup_ref(tables, "trend[test=memorization,strategy=lora_single_pass].direction") == ("falls", None)
    assert _lookup_ref(tables, "trend[test=official,legal=False].direction") == ("rises", None)
    # Every value tied: no direction, p = 1.
    flat = trend_table(pd.DataFrame(rows).assign(gain_official=0.001)).set_index("measure")
    flat = flat.loc["official gain"]
    assert flat["direction"] == "none" and flat["p_value"] == 1.0


def epoch_runs() -> list[dict]:
    """The fixture's prequant_val and score_first runs cut after E = 1, 2, 3 epochs, one run per E (as an
    epoch-axis study runs them), each official score lowered by 0.001 E (prequant_val: twice that)."""
    out = []
    for r in fixture_results("ttt_gap"):
        if r["ttt"]["strategy"] not in ("prequant_val", "score_first"):
            continue
        r["eval"]["val_bpb_base"] = r["eval"]["val_bpb"] + 0.003
        for e in (1, 2, 3):
            cut = json.loads(json.dumps(r))
            cut["ttt"]["epochs"], cut["ttt"]["per_epoch"] = e, r["ttt"]["per_epoch"][: e + 1]
            cut["eval"]["val_bpb"] -= 0.001 * e * (2 if r["ttt"]["strategy"] == "prequant_val" else 1)
            cut["run_id"] = f"{r['run_id']}_E{e}"
            cut["study_params"] = {"preset": "tiny", "seed": r["seed"], "bundle": "none",
                                   "overrides": {"ttt.epochs": e}}
            out.append(cut)
    return out


def test_compare_builds_the_paired_table_with_the_studys_own_match(tmp_path):
    """golf study compare checks conclusions against paired as the report writes it: with the section's
    `match`, not the default crossing of every illegal and legal epoch count."""
    from golf.study import report_tables

    study_dir = tmp_path / "epochs"
    for cut in epoch_runs():
        (study_dir / "runs" / cut["run_id"]).mkdir(parents=True)
        (study_dir / "runs" / cut["run_id"] / "result.json").write_text(json.dumps(cut))

    def pairs(sections):
        paired = report_tables(study_dir, sections)["paired"]
        return paired[paired["test"] == "illegal_vs_legal"]

    assert len(pairs(None)) == 9  # 3 illegal epoch counts x 3 legal ones
    matched = pairs(parse_sections([{"paired": {"match": ["ttt.epochs"]}}], "test"))
    assert sorted(matched["versus_setting"]) == ["epochs=1", "epochs=2", "epochs=3"]
    assert matched["mean_diff"].tolist() == pytest.approx([-0.001, -0.002, -0.003])
    with pytest.raises(GolfError, match="match must be a list"):
        write_report(study_dir, parse_sections([{"paired": {"match": "ttt.epochs"}}], "test"))


def test_within_run_curves_leave_out_runs_scored_at_the_ends_only():
    from golf.report.figures import _fig_ttt_curves

    def run(run_id, epochs, points, seed):
        return [{"run_id": run_id, "seed": seed, "strategy": "prequant_val", "epochs": epochs, "legal": False,
                 "epoch": e, "val_bpb": 2.0 - 0.01 * e, "gain": -0.01 * e, "val_bpb_adapted": math.nan,
                 "gain_adapted": math.nan, "val_bpb_heldout": math.nan, "gain_heldout": math.nan}
                for e in points]
    rows = run("full1", 4, range(5), 1) + run("full2", 4, range(5), 2) + run("ends", 4, (0, 4), 3)
    fig = _fig_ttt_curves(pd.DataFrame(rows), "t")
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [0, 1, 2, 3, 4]
    caption = fig._suptitle.get_text()
    assert "n = 2 units" in caption and "1 run scored before and after TTT only not drawn" in caption
    assert _fig_ttt_curves(pd.DataFrame(run("ends", 4, (0, 4), 3)), "t") is None


def test_runs_without_their_curve_are_the_same_configuration_as_runs_with_it():
    """ttt.probe_curve=false changes what a run records (epochs 0 and E only), never its numbers: it is no
    study column, so E = 3 stays one configuration whether its runs kept the curve or not, and the trend
    spans every epoch count; slopes use only the runs with a whole curve."""
    from golf.report.paired import paired_table, trend_table
    from golf.report.tables import slope_table

    results = epoch_runs()
    for cut in results:
        if cut["ttt"]["epochs"] == 3 and cut["seed"] != 1337:  # two of three seeds without the curve
            cut["ttt"]["per_epoch"] = [cut["ttt"]["per_epoch"][0], cut["ttt"]["per_epoch"][-1]]
            cut["study_params"]["overrides"]["ttt.probe_curve"] = False
            cut["config"]["ttt"]["probe_curve"] = False
    frame = per_epoch_frame(results)
    assert "ttt.probe_curve" not in key_columns(frame)
    paired = paired_table(frame)
    at_three = paired[(paired["test"] == "memorization") & (paired["epochs"] == 3)]
    assert len(at_three) == 2 and (at_three["n_units"] == 3).all()
    trend = trend_table(frame)
    assert (trend["epochs"] == "1 2 3").all() and (trend["n_units"] == 3).all()
    slopes = slope_table(frame)
    pooled = slopes[(slopes["strategy"] == "prequant_val") & (slopes["epochs"] == 3)
                    & (slopes["half"] == "A")]
    assert pooled["n_points"].tolist() == [3]  # seed 1337's epochs 1-3; the end-only runs are not fitted


def test_summary_names_a_base_key_whose_runs_started_from_other_weights(tmp_path):
    """A base retrained between runs keeps its cache key but not its weights: summary.md says so."""
    study_dir = tmp_path / "ttt_gap"
    shutil.copytree(FIXTURES / "ttt_gap", study_dir)
    paths = [p for p in sorted((study_dir / "runs").glob("*/result.json")) if p.parent.name != TRUNCATED]

    def stamp(digest_of):
        for path in paths:
            result = json.loads(path.read_text())
            result["train"]["cache_key"] = f"key{result['seed']}"
            digest = digest_of(path, result)
            if digest is None:  # a run from before the digest existed
                result["train"].pop("weights_sha256", None)
            else:
                result["train"]["weights_sha256"] = digest
            path.write_text(json.dumps(result))
        write_report(study_dir)
        return (study_dir / "summary.md").read_text()

    one_each = stamp(lambda path, r: f"{r['seed']:064x}")
    assert "more than one set of weights" not in one_each
    first = paths[0]
    seed = json.loads(first.read_text())["seed"]
    text = stamp(lambda path, r: ("f" * 64) if path == first else f"{r['seed']:064x}")
    section = text[text.index("## Base models with more than one set of weights"):]
    assert f"`key{seed}`" in section and "`ffffffffffff` (1 run)" in section
    assert sum(line.startswith("| `key") for line in section.splitlines()) == 1  # only the retrained key

    # a key where one run predates the digest is listed (its weights may differ); a key none of whose runs
    # record one is not (nothing to compare), and the count is that key's own
    seeds = sorted({json.loads(p.read_text())["seed"] for p in paths})
    mixed, bare = seeds[0], seeds[1]
    of_mixed = [p for p in paths if json.loads(p.read_text())["seed"] == mixed]
    text = stamp(lambda path, r: None if path == of_mixed[0] or r["seed"] == bare else f"{r['seed']:064x}")
    section = text[text.index("## Base models with more than one set of weights"):]
    listed = [line for line in section.splitlines() if line.startswith("| `key")]
    assert len(listed) == 1 and listed[0].startswith(f"| `key{mixed}`")
    assert f"`{f'{mixed:064x}'[:12]}` ({len(of_mixed) - 1} run" in listed[0] and "none recorded (1 run," in listed[0]
