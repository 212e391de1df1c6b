"""The report's aggregation against independent computations: numpy means/stds, scipy's paired
t-test called directly, the papers' improvement formulas, and the paper's own audit (spec §9.2)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cdrbench.report.cli import write_report
from cdrbench.report.collect import collect_results, scan_runs
from cdrbench.report.papers import improvement_audit, load_paper_table
from cdrbench.report.tables import build_table, long_frame, to_latex, to_markdown
from tests.report.fake_runs import make_run

# evaluation.md §6 E6: case 1 is better on average but not significant, case 2 is significant
A1 = [0.7795, 0.7760, 0.7830, 0.7771, 0.7819]
B1 = [0.7731, 0.7790, 0.7702, 0.7745, 0.7688]
A2 = [0.7795, 0.7801, 0.7789, 0.7812, 0.7790]
B2 = [0.7731, 0.7745, 0.7728, 0.7760, 0.7736]
C = [0.7001, 0.7010, 0.6990, 0.7005, 0.6999]
LL_A = [0.4510, 0.4530, 0.4520, 0.4515, 0.4525]  # mean 0.4520
LL_B = [0.4554, 0.4560, 0.4548, 0.4550, 0.4558]  # mean 0.4554
LL_C = [0.5000] * 5


@pytest.fixture
def sweep(tmp_path):
    for data, (a, b) in {"d1": (A1, B1), "d2": (A2, B2)}.items():
        for seed in range(5):
            make_run(tmp_path, f"{data}_a_{seed}", "bignas", data, seed, {"auc": a[seed], "logloss": LL_A[seed]})
            make_run(tmp_path, f"{data}_b_{seed}", "lightgcn", data, seed, {"auc": b[seed], "logloss": LL_B[seed]})
            make_run(tmp_path, f"{data}_c_{seed}", "bprmf", data, seed, {"auc": C[seed], "logloss": LL_C[seed]})
    return tmp_path


def test_mean_std_and_paired_t_test_match_numpy_and_scipy(sweep):
    runs = collect_results(sweep, log=lambda _: None)
    assert len(runs) == 30
    table = build_table(runs, metrics=["auc", "logloss"])
    frame = long_frame(table).set_index(["data", "row", "metric"])
    assert frame.loc[("d1", "bignas", "auc"), "mean"] == pytest.approx(np.mean(A1), abs=1e-12)
    assert frame.loc[("d1", "bignas", "auc"), "std"] == pytest.approx(np.std(A1, ddof=1), abs=1e-12)
    assert frame.loc[("d1", "lightgcn", "auc"), "n"] == 5
    for data, (a, b) in {"d1": (A1, B1), "d2": (A2, B2)}.items():
        comp = table.comparisons[(data, "auc")]
        assert (comp.winner, comp.runner_up) == ("bignas", "lightgcn")
        assert comp.seeds.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert table.comparisons[("d1", "auc")].seeds.p == pytest.approx(0.106, abs=1e-3)  # E6 case 1
    assert table.comparisons[("d2", "auc")].seeds.p == pytest.approx(1.3e-5, rel=0.05)  # E6 case 2
    # LogLoss: lower is better, the test runs on the sign-flipped differences
    assert table.comparisons[("d1", "logloss")].seeds.p == pytest.approx(stats.ttest_rel(LL_A, LL_B).pvalue, rel=1e-9)


def test_relaimpr_uses_the_papers_formulas_against_the_strongest_other_row(sweep):
    table = build_table(collect_results(sweep, log=lambda _: None), metrics=["auc", "logloss"])
    # evaluation.md E3: BiGNAS vs EDDA on Bo-Mo, 0.7795 vs 0.7731 -> +2.34 %, 0.4520 vs 0.4554 -> +0.75 %
    a, b = np.mean(A1), np.mean(B1)  # 0.7795 and 0.77312
    assert table.comparisons[("d1", "auc")].improvement == pytest.approx(((a - 0.5) / (b - 0.5) - 1) * 100, abs=1e-9)
    assert round(table.comparisons[("d1", "auc")].improvement, 2) == 2.34
    assert round(table.comparisons[("d1", "logloss")].improvement, 2) == 0.75


def test_bold_best_underlined_second_and_significance_mark(sweep):
    table = build_table(collect_results(sweep, log=lambda _: None), metrics=["auc", "logloss"])
    markdown = to_markdown(table)
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in markdown.splitlines()[2:]}
    d1_a, d1_b, d1_c = lines[("d1", "bignas")], lines[("d1", "lightgcn")], lines[("d1", "bprmf")]
    assert "**0.7795 ± 0.0030**" in d1_a and "*0.7795 ± 0.0030**" not in d1_a.replace("**0.7795", "")  # no mark in case 1
    assert "<u>0.7731 ± 0.0040</u>" in d1_b
    assert "**" not in d1_c and "<u>" not in d1_c
    assert "**0.7797 ± 0.0009*" in lines[("d2", "bignas")]  # case 2: significant, marked
    assert "**0.4520 ± 0.0008" in d1_a and "<u>0.4554" in d1_b  # LogLoss: the lowest is bold
    latex = to_latex(table, caption="t")
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    assert r"\textbf{0.7797 $\pm$ 0.0009$^{*}$}" in latex
    assert r"\underline{0.7731 $\pm$ 0.0040}" in latex


def test_paired_test_over_users_averages_seeds_first(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(40)
    per_user = {}
    for method, shift in (("lightgcn", 0.05), ("bprmf", 0.0)):
        for seed in (0, 1):
            run = make_run(tmp_path, f"{method}_{seed}", method, "d", seed, {"recall@20": 0.3 + shift + 0.01 * seed})
            values = np.clip(rng.uniform(0, 0.6, len(users)) + shift, 0, 1)
            per_user[(method, seed)] = values
            pd.DataFrame({"user": users, "recall@20": values}).to_parquet(run / "per_user_test.parquet")
    table = build_table(collect_results(tmp_path, log=lambda _: None), metrics=["recall@20"])
    comp = table.comparisons[("d", "recall@20")]
    a = (per_user[("lightgcn", 0)] + per_user[("lightgcn", 1)]) / 2
    b = (per_user[("bprmf", 0)] + per_user[("bprmf", 1)]) / 2
    assert comp.users.n == 40
    assert comp.users.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)


def test_bignas_relaimpr_audit_of_spec_9_2():
    audit = improvement_audit(load_paper_table("bignas/table3")).set_index(["data", "metric"])
    # spec §9.2: recomputed with the paper's formula / the plain ratio / what was printed
    expected = {
        ("bo-mo", "auc"): ("EDDA", 2.34, 0.83, "formula"),
        ("bo-mo", "logloss"): ("EDDA", 0.75, 0.75, "vs DisenCDR"),
        ("bo-el", "auc"): ("DisenCDR", 4.65, 1.29, "plain ratio"),
        ("bo-to", "logloss"): ("HeroGraph", -0.69, -0.69, "formula"),
        ("cd-cl", "auc"): ("DisenCDR", 6.39, 1.71, "plain ratio"),
        ("el-cl", "auc"): ("EDDA", 10.57, 2.32, "formula"),
        ("el-cl", "logloss"): ("HeroGraph", 1.39, 1.39, "formula"),  # printed 1.40: rounding
        ("industry-t1", "auc"): ("EDDA", 8.26, 3.04, "plain ratio"),
        ("industry-t3", "auc"): ("EDDA", 13.07, 4.61, "plain ratio"),
    }
    for key, (base, formula, plain, reading) in expected.items():
        row = audit.loc[key]
        assert (row["best_baseline"], row["improvement_formula"], row["plain_ratio"], row["printed_reading"]) == (base, formula, plain, reading), key


def test_pcrec_impro_row_recomputed():
    audit = improvement_audit(load_paper_table("pcrec/table2")).set_index("metric")
    assert audit.loc["recall@20", "improvement_formula"] == 42.43  # 0.2756 / 0.1935 (LGCN) - 1
    assert audit.loc["map@20", "best_baseline"] == "JSCN" and audit.loc["map@20", "improvement_formula"] == 0.38
    assert (audit["printed_reading"] == "formula").all()


def test_paper_column_and_difference(tmp_path):
    for seed, value in enumerate([0.7000, 0.7100, 0.7050]):
        make_run(tmp_path, f"b{seed}", "bignas", "cd-ki", seed, {"auc": value, "logloss": 0.40}, variant="full",
                 config={"report.paper": "bignas/table3"})
        make_run(tmp_path, f"l{seed}", "lightgcn", "cd-ki", seed, {"auc": value - 0.03, "logloss": 0.45},
                 config={"report.paper": "bignas/table3"})
    report = write_report(tmp_path, plots=False, log=lambda _: None)
    markdown = report.tables["bignas/table3"]
    header = markdown.splitlines()[0]
    assert "BiGNAS" in header and "LightGCN" in header and "BiGNAS (paper)" in header  # rows named as in the paper
    auc_line = next(line for line in markdown.splitlines() if "| cd-ki | auc |" in line)
    assert "0.7090" in auc_line and "-0.0040" in auc_line  # paper CD-Ki AUC 0.7090, ours 0.7050
    csv = pd.read_csv(tmp_path / "report" / "table_bignas_table3.csv")
    row = csv[(csv["row"] == "LightGCN") & (csv["metric"] == "auc")].iloc[0]
    assert row["paper"] == 0.6681 and row["delta_vs_paper"] == pytest.approx(0.6750 - 0.6681)
    assert (tmp_path / "report" / "audit_bignas_table3.md").is_file()


def test_unfinished_runs_are_skipped_with_a_line(tmp_path):
    make_run(tmp_path, "done", "pop", "d", 0, {"auc": 0.6})
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "run.json").write_text('{"status": "failed", "error": "ValueError: boom"}')
    lines = []
    scan = scan_runs(tmp_path, log=lines.append)
    assert len(scan.runs) == 1
    assert lines == [f"skipping unfinished run {crashed}: failed (ValueError: boom)"]


def test_report_on_a_directory_without_results_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    from cdrbench.__main__ import main

    empty = tmp_path / "empty"
    (empty / "job0").mkdir(parents=True)
    (empty / "job0" / "run.json").write_text('{"status": "running"}')
    monkeypatch.setattr(sys, "argv", ["cdrbench", "report", str(empty)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert err.strip() == f"cdrbench: error: report: no finished run (results.json) under {empty}"
    assert f"skipping unfinished run {empty / 'job0'}: running" in out
    monkeypatch.setattr(sys, "argv", ["cdrbench", "report", str(tmp_path / "absent")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and f"{tmp_path / 'absent'} is not a directory" in capsys.readouterr().err


def test_a_significantly_worse_papers_method_marks_the_other_row(tmp_path):
    for seed in range(5):  # case 2 of E6 with the paper's method (BiGNAS full) as the worse one
        make_run(tmp_path, f"full{seed}", "bignas", "d", seed, {"auc": B2[seed]}, variant="full")
        make_run(tmp_path, f"nosrc{seed}", "bignas", "d", seed, {"auc": A2[seed]}, variant="no_source")
    table = build_table(collect_results(tmp_path, log=lambda _: None), metrics=["auc"], paper=load_paper_table("bignas/figure2"))
    comp = table.comparisons[("d", "auc")]
    assert (comp.winner, comp.runner_up) == ("BiGNAS", "NO-SOURCE")  # the paper's method is the tested row
    assert comp.seeds.p == pytest.approx(stats.ttest_rel(B2, A2).pvalue, rel=1e-9) and comp.seeds.mean_diff < 0
    lines = {line.split("|")[2].strip(): line for line in to_markdown(table).splitlines()[2:]}
    assert "**0.7797 ± 0.0009***" in lines["NO-SOURCE"]
    assert "*" not in lines["BiGNAS"].replace("**", "")


def test_unknown_paper_table_is_rejected_before_any_work(tmp_path):
    from cdrbench.app import run
    from cdrbench.config import compose
    from cdrbench.errors import ConfigError

    cfg = compose(["method=pop", f"data.root={tmp_path / 'data'}", "report.paper=bignas/table9"])
    with pytest.raises(ConfigError, match=r"report.paper='bignas/table9' is not a paper table \(available: \['bignas/table3'"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
