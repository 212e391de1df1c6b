"""Top-N full ranking: worked examples E4, E5, E7 of the evaluation spec (section 6),
NDCG with several positives, exactness of the topk fast path under ties, chunk invariance."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from cdrbench.eval.ctr import UndefinedMetricError
from cdrbench.eval.topn import (
    UserItemSets,
    derive_chunk_size, BYTES_PER_CELL,
    evaluate_topn,
    metrics_from_rel,
    rank_items,
)

E4_SCORES = torch.tensor([0.10, 0.92, 0.35, 0.80, 0.55, 0.61, 0.92, 0.05, 0.70, 0.40])
E4_TRAIN, E4_VALID, E4_TEST = [3], [8], [2, 5, 6]
ABS = 1e-4


def sets(per_user: dict, num_users: int) -> UserItemSets:
    users = [u for u, items in per_user.items() for _ in items]
    items = [i for _, its in per_user.items() for i in its]
    return UserItemSets.from_pairs(torch.tensor(users, dtype=torch.int64),
                                   torch.tensor(items, dtype=torch.int64), num_users)


def const_score_fn(row: torch.Tensor):
    """Every user gets the same score row."""

    def fn(user_ids):
        return row.unsqueeze(0).expand(user_ids.numel(), -1).clone()

    return fn


def matrix_score_fn(mat: torch.Tensor, calls: list | None = None):
    def fn(user_ids):
        if calls is not None:
            calls.append(user_ids.clone())
        return mat[user_ids]

    return fn


def e4_eval(split: str, ks=(2, 5), map_denominator="min_k_rel", **kw):
    if split == "test":
        pos, hist = {0: E4_TEST}, {0: E4_TRAIN + E4_VALID}
    else:
        pos, hist = {0: E4_VALID}, {0: E4_TRAIN}
    return evaluate_topn(const_score_fn(E4_SCORES), torch.tensor([0]), sets(pos, 1),
                         sets(hist, 1), 10, list(ks), map_denominator, **kw)


def row_of(res, k):
    return {m: float(res.per_user[f"{m}@{k}"].iloc[0])
            for m in ("recall", "precision", "hr", "ndcg", "mrr", "map")}


# ----------------------------------------------------------------------------- E4


def test_e4_ranking_with_mask_and_tie():
    s = E4_SCORES.clone().unsqueeze(0)
    s[0, [3, 8]] = float("-inf")
    for method in ("sort", "topk"):
        assert rank_items(s, 8, method).tolist() == [[1, 6, 5, 4, 9, 2, 0, 7]]


# Test split (mask {3, 8}); hits at ranks 2, 3, 6.
# K=2: h=1. NDCG = (1/log2 3) / (1 + 1/log2 3). AP numerator = 1/2.
# K=5: h=2. NDCG = (1/log2 3 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4). AP num = 1/2 + 2/3.
E4_TEST_TABLE = {
    2: dict(recall=0.3333, precision=0.5000, hr=1, ndcg=0.3869, mrr=0.5000,
            map_min_k_rel=0.2500, map_rel=0.1667, map_k=0.2500, map_hits=0.5000),
    5: dict(recall=0.6667, precision=0.4000, hr=1, ndcg=0.5307, mrr=0.5000,
            map_min_k_rel=0.3889, map_rel=0.3889, map_k=0.2333, map_hits=0.5833),
}


@pytest.mark.parametrize("ranking", ["topk", "sort"])
@pytest.mark.parametrize("den", ["min_k_rel", "rel", "k", "hits"])
def test_e4_test_table(den, ranking):
    res = e4_eval("test", map_denominator=den, ranking=ranking)
    assert res.num_users == 1
    assert res.per_user["n_pos"].tolist() == [3]
    assert res.per_user["n_masked"].tolist() == [2]
    for k, exp in E4_TEST_TABLE.items():
        got = row_of(res, k)
        for m in ("recall", "precision", "hr", "ndcg", "mrr"):
            assert got[m] == pytest.approx(exp[m], abs=ABS), (k, m)
        assert got["map"] == pytest.approx(exp[f"map_{den}"], abs=ABS), (k, den)
        assert res.means[f"map@{k}"] == got["map"]


def test_e4_tie_rule_mrr():
    # items 1 and 6 tie at 0.92; 6 is a positive. Lower id first -> 6 at rank 2.
    res = e4_eval("test")
    assert res.per_user["mrr@2"].iloc[0] == 0.5  # the opposite order would give 1.0
    assert res.per_user["mrr@2"].iloc[0] != 1.0


@pytest.mark.parametrize("ranking", ["topk", "sort"])
def test_e4_valid_case(ranking):
    # mask {3}; ranking [1, 6, 8, 5, ...]; R = {8} at rank 3
    res = e4_eval("valid", ranking=ranking)
    assert res.per_user["n_pos"].tolist() == [1]
    assert res.per_user["n_masked"].tolist() == [1]
    assert all(v == 0.0 for v in row_of(res, 2).values())
    got = row_of(res, 5)
    exp = dict(recall=1.0, precision=0.2, hr=1.0, ndcg=0.5, mrr=1 / 3, map=1 / 3)
    for m, v in exp.items():
        assert got[m] == pytest.approx(v, abs=1e-12), m
    dens = {"rel": 1 / 3, "k": (1 / 3) / 5, "hits": 1 / 3}
    for den, v in dens.items():
        assert e4_eval("valid", map_denominator=den).per_user["map@5"].iloc[0] == \
            pytest.approx(v, abs=1e-12)


def test_history_item_that_is_also_positive_stays_unmasked():
    # item 6 in history AND positives: not masked, still counted as a hit at rank 2
    res = evaluate_topn(const_score_fn(E4_SCORES), torch.tensor([0]), sets({0: E4_TEST}, 1),
                        sets({0: [3, 8, 6]}, 1), 10, [2], "min_k_rel")
    assert res.per_user["n_masked"].tolist() == [2]
    assert res.per_user["mrr@2"].iloc[0] == 0.5


def test_score_fn_output_is_not_modified():
    mat = E4_SCORES.unsqueeze(0).clone()
    before = mat.clone()
    evaluate_topn(lambda u: mat, torch.tensor([0]), sets({0: E4_TEST}, 1),
                  sets({0: [3, 8]}, 1), 10, [2, 5])
    assert torch.equal(mat, before)


# ----------------------------------------------------------------------------- E5


E5 = {  # ranked [a, x, b, y], R = {a, b, c}
    4: dict(recall=2 / 3, min_k_rel=0.5556, rel=0.5556, k=0.4167, hits=0.8333),
    2: dict(recall=1 / 3, min_k_rel=0.5000, rel=0.3333, k=0.5000, hits=1.0000),
}


@pytest.mark.parametrize("den", ["min_k_rel", "rel", "k", "hits"])
@pytest.mark.parametrize("variant", ["distinct", "all_tied"])
def test_e5_map_denominators(den, variant):
    if variant == "distinct":
        # a=3, x=0, b=4, y=1, c=2: scores give the ranking [3, 0, 4, 1, 2]
        scores = torch.tensor([0.8, 0.6, 0.1, 0.9, 0.7])
        a, b, c = 3, 4, 2
    else:
        # every score equal: the tie rule alone gives [0, 1, 2, 3, 4] = [a, x, b, y, c]
        scores = torch.zeros(5)
        a, b, c = 0, 2, 4
    res = evaluate_topn(const_score_fn(scores), torch.tensor([0]), sets({0: [a, b, c]}, 1),
                        None, 5, [2, 4], den)
    for k, exp in E5.items():
        assert res.per_user[f"recall@{k}"].iloc[0] == pytest.approx(exp["recall"], abs=ABS)
        assert res.per_user[f"map@{k}"].iloc[0] == pytest.approx(exp[den], abs=ABS), (k, den)


def test_e5_metrics_from_rel_directly():
    rel = np.array([[1, 0, 1, 0]], dtype=bool)
    assert metrics_from_rel(rel, [3], [4], "hits")["map@4"][0] == pytest.approx(5 / 6)
    assert metrics_from_rel(rel, [3], [4], "k")["map@4"][0] == pytest.approx(5 / 12)
    # hits denominator with no hit is 0, not NaN
    none = np.zeros((1, 4), dtype=bool)
    assert metrics_from_rel(none, [3], [4], "hits")["map@4"][0] == 0.0


# ----------------------------------------------------------------------------- NDCG


def test_ndcg_several_positives():
    # 6 items, scores rank them [4, 0, 5, 2, 1, 3]; R = {0, 1, 3} -> rel = [0,1,0,0,1,1]
    # d(j) = 1/log2(j+1): d2 = 0.63093, d3 = 0.5, d5 = 0.38685, d6 = 0.35621
    # K=2: DCG = d2 = 0.63093;        IDCG over min(3,2)=2: 1 + d2 = 1.63093 -> 0.38685
    # K=3: DCG = d2;                  IDCG over 3: 1 + d2 + d3 = 2.13093     -> 0.29608
    # K=5: DCG = d2 + d5 = 1.01778;   IDCG over 3                            -> 0.47762
    # K=6: DCG = d2 + d5 + d6 = 1.37399; IDCG over min(3,6)=3                -> 0.64478
    scores = torch.tensor([0.5, 0.2, 0.3, 0.1, 0.9, 0.4])
    res = evaluate_topn(const_score_fn(scores), torch.tensor([0]), sets({0: [0, 1, 3]}, 1),
                        None, 6, [2, 3, 5, 6])
    exp = {2: 0.38685, 3: 0.29608, 5: 0.47762, 6: 0.64478}
    for k, v in exp.items():
        assert res.per_user[f"ndcg@{k}"].iloc[0] == pytest.approx(v, abs=1e-5), k
    assert res.per_user["recall@6"].iloc[0] == 1.0
    assert res.per_user["mrr@6"].iloc[0] == 0.5


def test_k_larger_than_num_items():
    scores = torch.tensor([0.5, 0.2, 0.3])
    res = evaluate_topn(const_score_fn(scores), torch.tensor([0]), sets({0: [1]}, 1),
                        None, 3, [10])
    assert res.per_user["recall@10"].iloc[0] == 1.0
    assert res.per_user["precision@10"].iloc[0] == pytest.approx(0.1)
    assert res.per_user["ndcg@10"].iloc[0] == pytest.approx(0.5)  # rank 3


# ----------------------------------------------------------------------------- E7


def e7_inputs():
    pos = sets({0: E4_TEST, 1: E4_VALID}, 3)
    hist = sets({0: E4_TRAIN + E4_VALID, 1: E4_TRAIN, 2: E4_TRAIN}, 3)
    return const_score_fn(E4_SCORES), torch.tensor([2, 0, 1]), pos, hist


@pytest.mark.parametrize("ranking", ["topk", "sort"])
def test_e7_chunk_invariance(ranking):
    fn, users, pos, hist = e7_inputs()
    results = {cs: evaluate_topn(fn, users, pos, hist, 10, [2, 5], chunk_size=cs,
                                 ranking=ranking)
               for cs in (1, 2, 3, 7, None)}
    ref = results[1]
    assert ref.per_user["user"].tolist() == [0, 1]  # user 2 has no positive: skipped
    assert ref.num_users == 2
    assert list(ref.per_user.columns[:3]) == ["user", "n_pos", "n_masked"]
    for cs, res in results.items():
        assert_frame_equal(res.per_user, ref.per_user, check_exact=True)
        assert res.means == ref.means, cs
    # means over the 2 evaluated users
    assert ref.means["recall@5"] == pytest.approx((2 / 3 + 1.0) / 2, abs=1e-12)
    assert ref.means["mrr@5"] == pytest.approx((0.5 + 1 / 3) / 2, abs=1e-12)
    assert ref.means["ndcg@2"] == pytest.approx(0.3869 / 2, abs=ABS)
    assert results[None].chunk_size == derive_chunk_size(10)


def test_only_users_with_positives_call_score_fn_in_ascending_order():
    mat = torch.rand(5, 10)
    calls = []
    pos = sets({0: [1], 3: [2], 4: [5]}, 5)
    evaluate_topn(matrix_score_fn(mat, calls), torch.tensor([4, 1, 3, 3, 0]), pos, None, 10,
                  [3], chunk_size=2)
    assert [c.tolist() for c in calls] == [[0, 3], [4]]


def test_no_user_with_positives_is_undefined():
    with pytest.raises(UndefinedMetricError, match="none of the 1 requested users"):
        evaluate_topn(const_score_fn(E4_SCORES), torch.tensor([0]), sets({1: [3]}, 2), None,
                      10, [2])


def test_derive_chunk_size():
    # the budget covers every [C, I] working tensor (BYTES_PER_CELL bytes per cell), not only the
    # 4-byte scores: Pop on 48.8 k items peaked at 3.9 GB under the scores-only rule
    assert BYTES_PER_CELL == 16
    assert derive_chunk_size(7000) == (1 << 30) // (16 * 7000)
    assert derive_chunk_size(7000, 1000) == 1
    assert derive_chunk_size(10, 1600) == 10


# ----------------------------------------------------------------------------- random, ties


def reference_rank(scores: np.ndarray, k: int) -> np.ndarray:
    """Independent tie rule: lexsort by (-score, item id)."""
    ids = np.arange(scores.shape[1])
    return np.stack([np.lexsort((ids, -row))[:k] for row in scores])


def test_rank_items_topk_equals_stable_sort_under_heavy_ties():
    g = torch.Generator().manual_seed(0)
    for n_values, k in [(2, 10), (3, 50), (5, 1), (50, 20), (300, 64), (2, 299), (2, 300)]:
        s = torch.randint(0, n_values, (40, 300), generator=g).float()
        s[:5, :] = 1.0  # whole rows tied
        s[5, :250] = float("-inf")  # fewer than k finite items
        exp = reference_rank(s.numpy(), k)
        assert np.array_equal(rank_items(s, k, "sort").numpy(), exp)
        assert np.array_equal(rank_items(s, k, "topk").numpy(), exp)


def test_negative_zero_ties_with_zero():
    scores = torch.tensor([-0.0, 0.0, -0.0, 0.0, -1.0])
    # item 2 (a -0.0) must come before item 3 (a +0.0): ranking [0, 1, 2, 3, 4]
    res = evaluate_topn(const_score_fn(scores), torch.tensor([0]), sets({0: [2]}, 1), None,
                        5, [3])
    assert res.per_user["mrr@3"].iloc[0] == pytest.approx(1 / 3)


def brute_force(mat, pos: dict, hist: dict, ks, den):
    """Per-user metrics by plain loops (independent of the vectorised code)."""
    rows = []
    for u in sorted(pos):
        r = set(pos[u])
        if not r:
            continue
        s = mat[u].astype(np.float64).copy()
        masked = set(hist.get(u, [])) - r
        s[list(masked)] = -np.inf
        order = reference_rank(s[None, :], len(s))[0]
        row = {"user": u, "n_pos": len(r), "n_masked": len(masked)}
        for k in ks:
            rel = [1 if it in r else 0 for it in order[:k]]
            h = sum(rel)
            dcg = sum(x / math.log2(j + 2) for j, x in enumerate(rel))
            idcg = sum(1 / math.log2(j + 2) for j in range(min(len(r), k)))
            first = next((j for j, x in enumerate(rel) if x), None)
            apn = sum(rel[j] * sum(rel[: j + 1]) / (j + 1) for j in range(k))
            d = {"min_k_rel": min(k, len(r)), "rel": len(r), "k": k, "hits": h}[den]
            row.update({f"recall@{k}": h / len(r), f"precision@{k}": h / k,
                        f"hr@{k}": float(h > 0), f"ndcg@{k}": dcg / idcg,
                        f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
                        f"map@{k}": apn / d if d else 0.0})
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(42)
    n_users, n_items = 50, 300
    mat = rng.integers(0, 6, (n_users, n_items)).astype(np.float32)  # integer scores: ties
    pos, hist = {}, {}
    for u in range(n_users):
        if u % 10 == 3:
            pos[u] = []  # no positive: skipped
        else:
            pos[u] = rng.choice(n_items, rng.integers(1, 12), replace=False).tolist()
        hist[u] = rng.choice(n_items, rng.integers(0, 40), replace=False).tolist()
        if pos[u] and u % 4 == 0:
            hist[u].append(pos[u][0])  # history item that is also a positive
    return mat, pos, hist


@pytest.mark.parametrize("den", ["min_k_rel", "hits"])
def test_random_fast_path_equals_exact_path_and_chunk_invariance(random_case, den):
    mat, pos, hist = random_case
    n_users, n_items = mat.shape
    ks = [1, 5, 10, 20]
    pos_s = sets({u: v for u, v in pos.items() if v}, n_users)
    hist_s = sets(hist, n_users)
    fn = matrix_score_fn(torch.from_numpy(mat))
    users = torch.arange(n_users)
    runs = {(rk, cs): evaluate_topn(fn, users, pos_s, hist_s, n_items, ks, den,
                                    chunk_size=cs, ranking=rk)
            for rk in ("topk", "sort") for cs in (1, 7, n_users)}
    ref = runs[("sort", n_users)]
    assert ref.num_users == 45
    for key, res in runs.items():
        assert_frame_equal(res.per_user, ref.per_user, check_exact=True)
        assert res.means == ref.means, key  # bit-identical
    # users=None means every user
    assert_frame_equal(evaluate_topn(fn, None, pos_s, hist_s, n_items, ks, den).per_user,
                       ref.per_user, check_exact=True)
    # and both equal a plain-loop implementation
    exp = brute_force(mat, pos, hist, ks, den)
    exp = exp[ref.per_user.columns]
    assert_frame_equal(ref.per_user, exp, check_exact=False, rtol=0, atol=1e-12,
                       check_dtype=False)
    for col in ref.means:
        assert ref.means[col] == pytest.approx(exp[col].mean(), abs=1e-12)


def test_random_continuous_scores_fast_path():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(64, 500, generator=g)
    s[:, 100:110] = s[:, 7:8]  # boundary ties in some rows
    exp = reference_rank(s.numpy(), 50)
    assert np.array_equal(rank_items(s, 50, "topk").numpy(), exp)


# ----------------------------------------------------------------------------- UserItemSets


def test_user_item_sets_sort_dedup_union_difference():
    s = UserItemSets.from_pairs(torch.tensor([2, 0, 2, 2, 0]), torch.tensor([5, 1, 3, 5, 1]), 4)
    assert s.indptr.tolist() == [0, 1, 1, 3, 3]
    assert s.indices.tolist() == [1, 3, 5]
    assert s.counts().tolist() == [1, 0, 2, 0]
    t = UserItemSets.from_pairs(torch.tensor([2, 3]), torch.tensor([3, 9]), 4)
    assert s.union(t).indices.tolist() == [1, 3, 5, 9]
    assert s.difference(t).indices.tolist() == [1, 5]
    with pytest.raises(ValueError, match="user ids"):
        UserItemSets.from_pairs(torch.tensor([4]), torch.tensor([0]), 4)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_map_denominator():
    with pytest.raises(ValueError, match="map_denominator"):
        e4_eval("test", map_denominator="mean")


@pytest.mark.parametrize("ks", [[0], [5, -1], [], [2.5]])
def test_bad_k(ks):
    with pytest.raises(ValueError, match="K"):
        e4_eval("test", ks=ks)


@pytest.mark.parametrize("bad", ["transposed", "wrong_items", "one_dim"])
def test_score_fn_wrong_shape(bad):
    def fn(u):
        if bad == "transposed":
            return torch.zeros(10, u.numel() + 1)
        if bad == "wrong_items":
            return torch.zeros(u.numel(), 9)
        return torch.zeros(10)

    with pytest.raises(ValueError, match=r"score_fn returned shape .*expected \(1, 10\)"):
        evaluate_topn(fn, torch.tensor([0]), sets({0: [1]}, 1), None, 10, [2])


def test_other_bad_inputs():
    pos = sets({0: [1]}, 1)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_topn(lambda u: torch.full((1, 10), float("nan")), torch.tensor([0]), pos,
                      None, 10, [2])
    with pytest.raises(ValueError, match="chunk_size"):
        e4_eval("test", chunk_size=0)
    with pytest.raises(ValueError, match="ranking"):
        e4_eval("test", ranking="heap")
    with pytest.raises(ValueError, match="num_items"):
        evaluate_topn(const_score_fn(E4_SCORES), torch.tensor([0]), sets({0: [12]}, 1), None,
                      10, [2])
    with pytest.raises(ValueError, match="torch.Tensor"):
        evaluate_topn(lambda u: np.zeros((1, 10)), torch.tensor([0]), pos, None, 10, [2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(random_case):
    mat, pos, hist = random_case
    n_users, n_items = mat.shape
    pos_s = sets({u: v for u, v in pos.items() if v}, n_users)
    hist_s = sets(hist, n_users)
    cpu_mat, gpu_mat = torch.from_numpy(mat), torch.from_numpy(mat).cuda()
    ref = evaluate_topn(matrix_score_fn(cpu_mat), None, pos_s, hist_s, n_items, [5, 20],
                        chunk_size=7)
    for rk in ("topk", "sort"):
        res = evaluate_topn(matrix_score_fn(gpu_mat), None, pos_s, hist_s, n_items, [5, 20],
                            chunk_size=7, device="cuda", ranking=rk)
        assert_frame_equal(res.per_user, ref.per_user, check_exact=True)
        assert res.peak_memory_bytes is not None and res.peak_memory_bytes > 0
    assert ref.peak_memory_bytes is None
