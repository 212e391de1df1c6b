"""Figures of ``cdrbench report`` (matplotlib, PNG + PDF): each is drawn when its inputs exist
under the report directory, and otherwise listed as skipped with the reason.

==========================  =================================================================
figure                      input
==========================  =================================================================
``curves_*``                ``history.csv`` of every run: train loss and the validation monitor
                            per epoch, one line per seed
``alpha_heatmap_*``         BiGNAS ``alpha.jsonl``: softmax(α) of the selected epoch per domain
                            and layer (mean over seeds)
``alpha_evolution_*``       BiGNAS ``alpha.jsonl``: every op's weight over the epochs
``importance_hist_*``       BiGNAS ``importance.parquet``: the relative source-row weights
``coords_curve``            a sweep over ``method.model.num_coords`` (HAGO Figure 3): test HR@10
                            and NDCG@10 against the coordinator count K
``tsne_*``                  an ``*embeddings*.parquet`` (columns ``domain``, ``kind`` user/item,
                            ``id``, ``embedding``): t-SNE of item embeddings coloured by domain
==========================  =================================================================
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

#: t-SNE runs on at most this many items per domain (sampled with a fixed seed)
TSNE_MAX_PER_DOMAIN = 1500


@dataclass
class PlotResult:
    name: str
    files: list[Path]
    skipped: Optional[str] = None  # the reason, when not drawn


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def _save(fig, out: Path, stem: str) -> list[Path]:
    files = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(files[0], dpi=130, bbox_inches="tight")
    fig.savefig(files[1], bbox_inches="tight")
    _pyplot().close(fig)
    return files


def training_curves(runs: pd.DataFrame, out: Path) -> list[PlotResult]:
    """One figure per (data, row): train loss and validation monitor per epoch, a line per seed."""
    plt = _pyplot()
    results = []
    for (data, row), part in runs.groupby(["data", "row"], sort=False):
        histories = []
        for _, run in part.iterrows():
            path = Path(run["run_dir"]) / "history.csv"
            if path.is_file():
                histories.append((run["seed"], run["monitor"], pd.read_csv(path)))
        if not histories:
            continue
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.2))
        monitor = histories[0][1]
        for seed, _, h in histories:
            x = np.arange(len(h))
            if "loss" in h:
                ax_loss.plot(x, h["loss"], label=f"seed {seed}")
            column = f"valid_{monitor}"
            if column in h:
                ax_val.plot(x[h[column].notna()], h[column].dropna(), marker=".", label=f"seed {seed}")
        ax_loss.set(xlabel="epoch", ylabel="train loss", title=f"{row} on {data}")
        ax_val.set(xlabel="epoch", ylabel=f"valid {monitor}")
        ax_val.legend(fontsize=7)
        fig.tight_layout()
        results.append(PlotResult(f"curves {data} {row}", _save(fig, out, f"curves_{_slug(data)}_{_slug(row)}")))
    if not results:
        results.append(PlotResult("training curves", [], "no run has a history.csv"))
    return results


def _alpha_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "alpha.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _op_names(record: dict, domain: str, layer: int) -> list[str]:
    ops = record.get("ops")
    if isinstance(ops, dict):  # DISCRETE retrain: one op per layer and domain
        return [ops[domain][layer]]
    return list(ops or [])


def selected_alpha(rows: list[dict], best_epoch) -> dict:
    """The alpha.jsonl record of the selected epoch (the last phase's), else the last record."""
    last_phase = rows[-1].get("phase")
    match = [r for r in rows if r.get("epoch") == best_epoch and r.get("phase") == last_phase]
    return (match or rows[-1:])[-1]


def alpha_plots(runs: pd.DataFrame, out: Path) -> list[PlotResult]:
    """BiGNAS: heat-map of softmax(α) at the selected epoch per domain x layer (mean over
    seeds), and the evolution of every op weight over the epochs (first seed)."""
    plt = _pyplot()
    results = []
    for (data, row), part in runs.groupby(["data", "row"], sort=False):
        per_seed = [(run, _alpha_rows(Path(run["run_dir"]))) for _, run in part.sort_values("seed").iterrows()]
        per_seed = [(run, rows) for run, rows in per_seed if rows and rows[-1].get("alpha")]
        if not per_seed:
            continue
        selected = [selected_alpha(rows, run.get("best_epoch")) for run, rows in per_seed]
        first = selected[0]
        domains = list(first["alpha"])
        layers = len(first["alpha"][domains[0]])
        ops = _op_names(first, domains[0], 0)
        if any(len(_op_names(first, d, 0)) < 2 for d in domains):
            continue  # one op per layer (MANUAL, DISCRETE retrain): nothing to show
        mean = np.mean([[r["alpha"][d] for d in domains] for r in selected], axis=0)  # [D, L, O]
        fig, ax = plt.subplots(figsize=(1.1 * len(ops) + 2, 0.55 * len(domains) * layers + 1.2))
        grid = mean.reshape(len(domains) * layers, len(ops))
        image = ax.imshow(grid, cmap="viridis", aspect="auto")  # colours span the values; numbers are printed
        ax.set_xticks(range(len(ops)), ops)
        ax.set_yticks(range(grid.shape[0]), [f"{d} L{i + 1}" for d in domains for i in range(layers)])
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if value < (grid.min() + grid.max()) / 2 else "black")
        ax.set_title(f"softmax(alpha) at the selected epoch, {row} on {data} ({len(selected)} seed(s))", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
        results.append(PlotResult(f"alpha heat-map {data} {row}", _save(fig, out, f"alpha_heatmap_{_slug(data)}_{_slug(row)}")))

        run, rows = per_seed[0]
        rows = [r for r in rows if r.get("phase") == rows[-1].get("phase")]
        epochs = [r["epoch"] for r in rows]
        fig, axes = plt.subplots(len(domains), layers, figsize=(4 * layers, 2.6 * len(domains)), squeeze=False)
        for di, domain in enumerate(domains):
            for layer in range(layers):
                ax = axes[di][layer]
                weights = np.array([r["alpha"][domain][layer] for r in rows])
                for oi, op in enumerate(ops):
                    ax.plot(epochs, weights[:, oi], label=op)
                ax.set(title=f"{domain}, layer {layer + 1}", xlabel="epoch", ylabel="op weight")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"alpha over epochs, {row} on {data}, seed {run['seed']}", fontsize=9)
        fig.tight_layout()
        results.append(PlotResult(f"alpha evolution {data} {row}", _save(fig, out, f"alpha_evolution_{_slug(data)}_{_slug(row)}")))
    if not results:
        results.append(PlotResult("alpha heat-map / evolution", [], "no run has an alpha.jsonl with more than one candidate op (BiGNAS full/mix/no_impo/no_source)"))
    return results


def importance_histograms(runs: pd.DataFrame, out: Path) -> list[PlotResult]:
    """Histogram of the relative source-row weights (1 = average) of BiGNAS's perceptron."""
    plt = _pyplot()
    results = []
    for (data, row), part in runs.groupby(["data", "row"], sort=False):
        tables = []
        for _, run in part.iterrows():
            path = Path(run["run_dir"]) / "importance.parquet"
            if path.is_file():
                tables.append((run["seed"], pd.read_parquet(path)))
        if not tables:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for seed, t in tables:
            ax.hist(t["relative_weight"], bins=60, histtype="step", label=f"seed {seed} (γ_S {t['gamma_S'].iloc[0]:.3f})")
        ax.set(xlabel="relative weight of a source interaction (1 = uniform)", ylabel="source rows",
               title=f"source-importance weights, {row} on {data}")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        results.append(PlotResult(f"importance histogram {data} {row}", _save(fig, out, f"importance_hist_{_slug(data)}_{_slug(row)}")))
    if not results:
        results.append(PlotResult("importance histogram", [], "no run has an importance.parquet (BiGNAS with the perceptron)"))
    return results


def coords_curve(runs: pd.DataFrame, configs: pd.Series, out: Path, key: str = "method.model.num_coords",
                 metrics: tuple = ("hr@10", "ndcg@10")) -> list[PlotResult]:
    """Test metrics against the coordinator count (HAGO Figure 3), mean ± std over seeds."""
    if configs is None or runs.empty:
        return [PlotResult("coordinator-count curve", [], f"no runs with {key}")]
    k = configs.map(lambda c: c.get(key))
    present = [m for m in metrics if f"test_{m}" in runs]
    if k.isna().all() or k.dropna().nunique() < 2:
        return [PlotResult("coordinator-count curve", [], f"needs runs at two or more values of {key} (HAGO's Figure 3 sweep)")]
    if not present:
        return [PlotResult("coordinator-count curve", [], f"runs with {key} have none of {list(metrics)}")]
    plt = _pyplot()
    frame = runs.assign(K=k).dropna(subset=["K"])
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
    for ax, metric in zip(axes[0], present):
        for data, part in frame.groupby("data"):
            stats = part.groupby("K")[f"test_{metric}"].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index.astype(float), stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=data)
        ax.set(xlabel="coordinators per type and domain (K)", ylabel=f"test {metric}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return [PlotResult("coordinator-count curve", _save(fig, out, "coords_curve"))]


def _embedding_matrix(frame: pd.DataFrame) -> Optional[np.ndarray]:
    if "embedding" in frame:
        return np.stack(frame["embedding"].map(np.asarray).to_numpy()).astype(np.float64)
    dims = [c for c in frame.columns if re.fullmatch(r"(e|dim_?|emb_?)\d+", str(c))]
    return frame[dims].to_numpy(np.float64) if dims else None


def tsne_plots(directory: Path, out: Path) -> list[PlotResult]:
    """t-SNE of item embeddings per domain from every ``*embeddings*.parquet`` under the directory."""
    files = sorted(p for p in Path(directory).glob("**/*embeddings*.parquet") if out not in p.parents)
    if not files:
        return [PlotResult("t-SNE of item embeddings", [], "no *embeddings*.parquet (HAGO writes one: domain, kind, id, embedding)")]
    from sklearn.manifold import TSNE

    plt = _pyplot()
    results = []
    for path in files:
        frame = pd.read_parquet(path)
        if "domain" not in frame:
            results.append(PlotResult(f"t-SNE {path}", [], "no 'domain' column"))
            continue
        if "kind" in frame:
            frame = frame[frame["kind"].astype(str) == "item"]
        if "stage" in frame:  # HAGO: the pre-trained tables hold every domain (tuned rows: the target only)
            frame = frame[frame["stage"].astype(str) == "pretrained"]
        keep = [i for _, g in frame.groupby("domain") for i in g.sample(min(len(g), TSNE_MAX_PER_DOMAIN), random_state=0).index]
        frame = frame.loc[keep]
        matrix = _embedding_matrix(frame)
        if matrix is None or len(frame) < 5:
            results.append(PlotResult(f"t-SNE {path}", [], "no embedding column (embedding, or e0..eN) or fewer than 5 items"))
            continue
        points = TSNE(n_components=2, perplexity=min(30.0, (len(frame) - 1) / 3), init="pca", random_state=0).fit_transform(matrix)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for domain in frame["domain"].unique():
            mask = (frame["domain"] == domain).to_numpy()
            ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, label=str(domain))
        ax.set(title=f"t-SNE of item embeddings ({path.parent.name})", xticks=[], yticks=[])
        ax.legend(markerscale=3, fontsize=7)
        stem = f"tsne_{_slug(path.parent.name)}_{_slug(path.stem)}"
        results.append(PlotResult(f"t-SNE {path.parent.name}", _save(fig, out, stem)))
    return results


def make_plots(runs: pd.DataFrame, configs: Optional[pd.Series], directory: Path, out: Path,
               log: Callable[[str], None] = print) -> list[PlotResult]:
    """Every figure whose inputs exist; the others come back with ``skipped`` set."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for make in (lambda: training_curves(runs, out), lambda: alpha_plots(runs, out),
                 lambda: importance_histograms(runs, out), lambda: coords_curve(runs, configs, out),
                 lambda: tsne_plots(directory, out)):
        results += make()
    for r in results:
        if r.skipped:
            log(f"plot skipped: {r.name}: {r.skipped}")
    return results
