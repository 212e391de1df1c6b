#!/usr/bin/env python
"""Convert the authors' BiGNAS processed split (``data.pt``) ONCE into files cdrbench reads.

The authors' code (gcd19/BiGNAS, ``dataset.py``) writes its split as a pickled list holding one
PyG ``Data`` (``source_link``/``source_label``, ``target_link``/``target_label``, ``split_mask``).
That pickle is read here, and only here, with ``torch.load(weights_only=False)`` (it needs
torch-geometric to unpickle): cdrbench itself never unpickles foreign files. The output is four
headerless ``user,item,label`` CSVs in the layout of
:class:`cdrbench.data.sources.presplit.EdgeIndexSplit` (``label: true``), plus ``manifest.json``
(the sha256 of ``data.pt`` and the counts), which ``data=bignas-refsplit`` then loads with
``split.kind=given``:

    python scripts/bignas_refsplit_convert.py <clone>/data/CD_Kitchen_for_Kitchen/processed/data.pt \\
        <data.root>/bignas-refsplit-ml100k
    python -m cdrbench method=bignas method.profile=refcode data=bignas-refsplit data.root=<data.root>

Node ids are written as they are in ``data.pt`` (users ``0..U-1``; source and target items both
offset by ``U``; cdrbench reads them as tokens, per domain).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

FILES = {
    "source": "source_train_edge_index.csv",
    "train": "target_train_edge_index.csv",
    "valid": "target_valid_edge_index.csv",
    "test": "target_test_edge_index.csv",
}


def write_edges(path: Path, link: torch.Tensor, label: torch.Tensor) -> int:
    frame = pd.DataFrame({"user": link[0].numpy(), "item": link[1].numpy(), "label": label.numpy().astype(np.int64)})
    if not frame["label"].isin([0, 1]).all():
        raise SystemExit(f"{path.name}: labels other than 0/1 in data.pt")
    frame.to_csv(path, header=False, index=False)
    return len(frame)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_pt", type=Path, help="the authors' processed/data.pt")
    parser.add_argument("out", type=Path, help="output folder (created; must not hold a previous conversion)")
    args = parser.parse_args()
    if (args.out / "manifest.json").exists():
        raise SystemExit(f"{args.out} already holds a converted split (manifest.json); convert once")
    digest = hashlib.sha256(args.data_pt.read_bytes()).hexdigest()
    data_list = torch.load(args.data_pt, weights_only=False)  # the authors' pickle: trusted, read here only
    data = data_list[0]
    mask = data.split_mask
    target_users = data.target_link[0]
    for split in ("valid", "test"):
        per_user = torch.bincount(target_users[mask[split]], minlength=int(data.num_users))
        if not bool((per_user == 1).all()):
            raise SystemExit(f"data.pt: the {split} split does not hold exactly one row per user")
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"source": write_edges(args.out / FILES["source"], data.source_link, data.source_label)}
    for split in ("train", "valid", "test"):
        counts[split] = write_edges(args.out / FILES[split], data.target_link[:, mask[split]], data.target_label[mask[split]])
    manifest = {
        "converted_from": str(args.data_pt), "data_pt_sha256": digest,
        "num_users": int(data.num_users), "num_source_items": int(data.num_source_items),
        "num_target_items": int(data.num_target_items), "rows": counts,
        "positive_share": {"source": float(data.source_label.mean()), "target": float(data.target_label.mean())},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
