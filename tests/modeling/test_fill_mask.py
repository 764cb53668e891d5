"""Whole-word [MASK] filling: the decoder against brute force, and a trained tiny model end to end."""

from __future__ import annotations

import itertools

import pytest
import torch

from bertwwm.cli import main
from bertwwm.core.errors import UserError
from bertwwm.modeling.fill_mask import decode, fill_mask

MASK, V = 5, 6


def toy_scorer(seed: int = 0):
    """Log-probabilities where each position depends on the tokens already filled elsewhere."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(8, V, generator=g) * 2
    pair = torch.randn(8, 8, V, V, generator=g) * 2  # pair[q, p, token at q, token at p]

    def score(batch: torch.Tensor) -> torch.Tensor:
        out = base.expand(batch.shape[0], -1, -1).clone()
        for b in range(batch.shape[0]):
            for q in range(batch.shape[1]):
                t = int(batch[b, q])
                if t != MASK:
                    for p in range(batch.shape[1]):
                        if p != q:
                            out[b, p] += pair[q, p, t]
        return torch.log_softmax(out, -1)

    return score


def brute_force(score, ids, positions, banned):
    """Best (tokens, score) over every fill order and every token choice."""
    best = {}
    allowed = [t for t in range(V) if t not in banned]
    for order in itertools.permutations(positions):
        for tokens in itertools.product(allowed, repeat=len(order)):
            cur, total = ids.clone(), 0.0
            for p, t in zip(order, tokens):
                lp = score(cur[None])[0, p]
                lp[banned] = float("-inf")
                total += float(lp[t])
                cur[p] = t
            key = tuple(int(cur[p]) for p in positions)
            best[key] = max(best.get(key, float("-inf")), total)
    return sorted(best.items(), key=lambda kv: -kv[1])


def test_wide_beam_finds_the_exhaustive_optimum():
    score = toy_scorer(1)
    ids = torch.tensor([0, MASK, MASK, 3, MASK, 2])
    positions = [1, 2, 4]
    banned = torch.tensor([MASK])
    want = brute_force(score, ids, positions, [MASK])
    got = decode(score, ids, positions, top_k=4, beam=200, banned=banned)
    assert [tuple(t) for t, _ in got] == [k for k, _ in want[:4]]
    assert [s for _, s in got] == pytest.approx([v for _, v in want[:4]], rel=1e-5)


def test_iterative_fills_the_most_confident_position_first():
    score = toy_scorer(2)
    ids = torch.tensor([0, MASK, MASK, 1])
    positions = [1, 2]
    banned = torch.tensor([MASK])
    got = decode(score, ids, positions, top_k=3, beam=1, banned=banned)
    lp = score(ids[None])[0]
    lp[:, MASK] = float("-inf")
    first = max(positions, key=lambda p: float(lp[p].max()))
    other = 2 if first == 1 else 1
    alternatives = lp[first].topk(3).indices.tolist()
    for (tokens, s), t0 in zip(got, alternatives):
        chosen = dict(zip(positions, tokens))
        assert chosen[first] == t0  # the k candidates branch at the most confident choice
        filled = ids.clone()
        filled[first] = t0
        lp2 = score(filled[None])[0, other]
        lp2[MASK] = float("-inf")
        assert chosen[other] == int(lp2.argmax())  # ...then complete greedily
        assert s == pytest.approx(float(lp[first, t0] + lp2.max()), rel=1e-5)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


# The masked texts the tests below fill, with the memorised answer (one character per [MASK]).
PROBES = [("北京是中国的[MASK][MASK]。", "首都"), ("[MASK][MASK]是一座国际大都市。", "上海"),
          ("北京是[MASK]国的首[MASK]。", "中都"), ("我们今天去[MASK][MASK]散步。", "公园")]
MEMORISED = 0.9  # probability of the right character at every masked position, whatever is filled already


def _probe_states(tok):
    """(input ids, {position: right token}) for every probe with any proper subset of its masks filled
    correctly: every state a decoder on the right path can be in."""
    states = []
    for text, answer in PROBES:
        ids = tok(text, return_tensors="pt")["input_ids"][0]
        positions = (ids == tok.mask_token_id).nonzero(as_tuple=True)[0].tolist()
        right = dict(zip(positions, tok.convert_tokens_to_ids(list(answer))))
        for n in range(len(positions)):
            for filled in itertools.combinations(positions, n):
                state = ids.clone()
                for p in filled:
                    state[p] = right[p]
                states.append((state, {p: t for p, t in right.items() if p not in filled}))
    return states


@torch.no_grad()
def _least_right_probability(hf, states) -> float:
    hf.eval()
    worst = 1.0
    for ids, open_positions in states:  # one unpadded row at a time, as fill_mask scores them
        probs = hf(input_ids=ids[None]).logits[0].float().softmax(-1)
        worst = min(worst, *(float(probs[p, t]) for p, t in open_positions.items()))
    hf.train()
    return worst


@pytest.fixture(scope="module")
def memorised_model(tmp_path_factory):
    """A tiny MLM trained until it has memorised a few sentences, saved as a standard folder.

    Training stops once, in every state of every probe, the right character has probability >= MEMORISED.
    Then any path that makes a wrong choice scores below log(1 - MEMORISED) while the right filling scores
    above n * log(MEMORISED), so the iterative and beam decoders must both return the memorised words.
    How many steps that takes depends on the CPU's float path; the property does not.
    """
    from bertwwm.modeling.model import PretrainingModel, bert_config, build_model, save_model
    from bertwwm.text.tokens import chinese_tokenizer

    tok = chinese_tokenizer()
    sentences = ["北京是中国的首都。", "上海是一座国际大都市。", "我们今天去公园散步。"]
    states = _probe_states(tok)
    torch.manual_seed(0)
    hf = build_model(bert_config("tiny", dropout=0.0), nsp=False)
    model = PretrainingModel(hf)
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-3, foreach=True)  # AdamW's update, a fifth faster on CPU
    # Four differently masked copies of each sentence per step: a smooth enough gradient that the
    # probabilities rise steadily (~50 steps) instead of swinging with each random mask.
    enc = tok(sentences * 4, padding=True, return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for step in range(1, 401):
        ids = enc["input_ids"].clone()
        chooseable = enc["attention_mask"].bool() & (ids != 101) & (ids != 102)
        pick = (torch.rand(ids.shape, generator=g) < 0.4) & chooseable
        pick[:, 1] |= ~pick.any(1)
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        ids[pick] = 103
        loss = model(ids, enc["attention_mask"], enc["token_type_ids"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            worst = _least_right_probability(hf, states)
            if worst >= MEMORISED:
                break
    assert worst >= MEMORISED, f"the tiny model did not memorise the sentences in {step} steps (p={worst:.3f})"
    folder = tmp_path_factory.mktemp("mlm") / "model"
    save_model(hf, folder)
    return folder


def test_fills_a_masked_word_with_a_trained_model(memorised_model, capsys):
    for beam in (1, 3):
        results = fill_mask(str(memorised_model), "北京是中国的[MASK][MASK]。", top_k=3, beam=beam)
        assert results[0].words == ["首都"] and results[0].text == "北京是中国的首都。"
        assert len(results) == 3 and results[0].score >= results[1].score >= results[2].score
        assert all(len(r.words[0]) == 2 for r in results)
    assert fill_mask(str(memorised_model), "[MASK][MASK]是一座国际大都市。", top_k=1)[0].words == ["上海"]
    two = fill_mask(str(memorised_model), "北京是[MASK]国的首[MASK]。", top_k=2, beam=2)
    assert two[0].words == ["中", "都"] and two[0].text == "北京是中国的首都。"
    assert main(["fill-mask", str(memorised_model), "我们今天去[MASK][MASK]散步。", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("1\t公园\t")


def test_fill_mask_errors(memorised_model, capsys):
    with pytest.raises(UserError, match="no \\[MASK\\]"):
        fill_mask(str(memorised_model), "没有掩码")
    assert main(["fill-mask", str(memorised_model), "[MASK]", "--top-k", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
