"""Figures of the report: drawn from their inputs (PNG + PDF), skipped with a reason without them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cdrbench.report.cli import write_report
from cdrbench.report.plots import selected_alpha
from tests.report.fake_runs import make_run

OPS = ["gcn", "gat", "sage", "lightgcn", "linear"]


def _alpha_rows(epochs: int, best: int) -> list[dict]:
    rows = []
    for epoch in range(epochs):
        weights = np.full(5, 0.1)
        weights[0 if epoch == best else 4] = 0.6  # the selected epoch puts its mass on gcn
        rows.append({"phase": "train", "epoch": epoch, "ops": OPS,
                     "alpha": {"source": [weights.tolist()] * 2, "target": [weights.tolist()] * 2}})
    return rows


def test_selected_alpha_is_the_best_epochs_record():
    rows = _alpha_rows(6, best=2)
    assert selected_alpha(rows, 2)["epoch"] == 2 and selected_alpha(rows, 2)["alpha"]["target"][0][0] == 0.6
    assert selected_alpha(rows, None)["epoch"] == 5  # no selection recorded: the last epoch


def test_every_figure_is_drawn_from_its_inputs(tmp_path):
    for seed in (0, 1):
        run = make_run(tmp_path, f"bignas_{seed}", "bignas", "d", seed, {"auc": 0.7 + seed / 100}, variant="full", best_epoch=2)
        (run / "alpha.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _alpha_rows(6, best=2)))
        pd.DataFrame({"epoch": range(6), "loss": np.linspace(1, 0.5, 6), "valid_auc": np.linspace(0.6, 0.7, 6)}).to_csv(run / "history.csv", index=False)
        pd.DataFrame({"user": range(50), "item": range(50), "y": 1, "relative_weight": np.linspace(0.5, 1.5, 50),
                      "gamma_S": 0.99}).to_parquet(run / "importance.parquet")
    for k in (1, 5, 10):
        for seed in (0, 1):
            make_run(tmp_path, f"hago_k{k}_{seed}", "hago", "douban", seed, {"hr@10": 0.3 + k / 100, "ndcg@10": 0.12},
                     config={"method.model.num_coords": k})
    rng = np.random.default_rng(0)
    emb = pd.DataFrame({"domain": ["book"] * 30 + ["music"] * 30 + ["book"] * 5, "kind": ["item"] * 60 + ["user"] * 5,
                        "id": range(65), "embedding": list(rng.normal(size=(65, 8)))})
    emb.to_parquet(tmp_path / "hago_k1_0" / "embeddings.parquet")
    report = write_report(tmp_path, log=lambda _: None)
    names = {f.name for f in report.files}
    for stem in ("curves_d_bignas", "alpha_heatmap_d_bignas", "alpha_evolution_d_bignas", "importance_hist_d_bignas",
                 "coords_curve", "tsne_hago_k1_0_embeddings"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    assert report.skipped_plots == []


def test_missing_inputs_are_listed_with_the_reason(tmp_path):
    make_run(tmp_path, "pop", "pop", "d", 0, {"recall@20": 0.2})
    report = write_report(tmp_path, log=lambda _: None)
    skipped = dict(report.skipped_plots)
    assert skipped["training curves"] == "no run has a history.csv"
    assert "alpha.jsonl" in skipped["alpha heat-map / evolution"]
    assert "importance.parquet" in skipped["importance histogram"]
    assert "method.model.num_coords" in skipped["coordinator-count curve"]
    assert "*embeddings*.parquet" in skipped["t-SNE of item embeddings"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "- skipped: training curves: no run has a history.csv" in text
