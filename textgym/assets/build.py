"""Build the embedded assets: task data, tokenizer and the small default language model.

Usage::

    python -m textgym.assets.build            # full build (data, tokenizer, ~1M-param GPT-2)
    python -m textgym.assets.build --quick    # minutes -> seconds: tiny corpus, few steps
    python -m textgym.assets.build --data-only
    python -m textgym.assets.build --out /tmp/assets   # writes /tmp/assets/{data,model}

Order of work: the task data files are written first (other code only needs them), then the
tokenizer, then the model.

* Data: ``data/{reviews,concepts,reverse}.jsonl`` from ``corpus.py`` (formats in its docstring).
* Tokenizer: byte-level BPE (``tokenizers``), ``<|endoftext|>`` = id 0 = bos = eos, ``<pad>`` =
  id 1, saved as a ``PreTrainedTokenizerFast``; it adds no special token by itself (GPT-2 style),
  so a training document is its text tokens followed by one EOS id.
* Model: ``GPT2LMHeadModel`` (n_embd 128, 4 layers, 4 heads, 128 positions, tied embeddings),
  trained with AdamW and a cosine schedule. Each document is right-padded on its own (never
  packed) with the padding masked out of the loss, so token positions at inference (prompt
  first, position 0) are those of training. Batches group documents of similar length only to
  waste less compute on padding.

Everything is seeded (``random.Random``, ``torch.manual_seed``) and runs on the CPU with
``--threads`` torch threads (default 2).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

from textgym.assets import ASSETS_DIR, TASK_NAMES, corpus, load_jsonl

EOS = "<|endoftext|>"
PAD = "<pad>"
RECORDS = {
    "reviews": corpus.review_records,
    "concepts": corpus.concept_records,
    "reverse": corpus.reverse_records,
}
"""Row makers of the task data files, by task name."""


@dataclass(frozen=True)
class BuildConfig:
    """Sizes and optimisation settings of one build."""

    seed: int = 0
    """Seed of the corpus, the task data and torch."""
    n_reviews: int = 32_000
    """Review documents in the LM training corpus."""
    n_concepts: int = 32_000
    """Concept-to-sentence documents (train concept sets only)."""
    n_reverse: int = 6_000
    """Reverse documents: ~3 % of the training tokens (~9 % of documents, being short), so the
    format is known but reversing is not mastered (room for imitation learning)."""
    vocab_size: int = 1536
    """BPE vocabulary including the 2 special tokens."""
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 128
    batch_size: int = 32
    steps: int = 2000
    """Updates; 2000 x 32 documents is about one epoch of the corpus."""
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    eval_every: int = 250
    eval_docs: int = 400
    """Validation documents scored at each periodic evaluation (all of them at the end)."""
    threads: int = 2
    """torch threads: 2 for the 2-core build machine when it is idle; on a busy machine 1 is
    several times faster (threads of one op wait for each other)."""

    @classmethod
    def quick(cls) -> BuildConfig:
        """A build that finishes in well under a minute (smoke test, not a usable model)."""
        return cls(
            n_reviews=600,
            n_concepts=600,
            n_reverse=50,
            vocab_size=512,
            steps=30,
            warmup=5,
            eval_every=15,
            eval_docs=64,
        )


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def write_task_data(out_dir: Path, seed: int) -> dict[str, int]:
    """Write ``<task>.jsonl`` for every built-in task; return the row count per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in TASK_NAMES:
        rows = RECORDS[name](seed)
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        counts[name] = len(rows)
    return counts


def validation_documents(seed: int) -> list[tuple[str, str]]:
    """Held-out LM documents: prompt + each reference of every validation row of every task."""
    docs: list[tuple[str, str]] = []
    for name in TASK_NAMES:
        for row in RECORDS[name](seed):
            if row["split"] == "validation":
                refs = cast(list[str], row["references"])
                docs.extend((name, str(row["prompt"]) + ref) for ref in refs)
    return docs


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int, max_len: int, out_dir: Path) -> Any:
    """Train a byte-level BPE on ``texts`` and save it as a ``PreTrainedTokenizerFast``.

    Returns:
        The ``PreTrainedTokenizerFast`` (eos = bos = ``<|endoftext|>`` id 0, pad = ``<pad>`` id 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a prompt's first word has no leading space, and the completion's
    # first word keeps its own, exactly as in the training documents.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets only; adds no token
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],  # ids 0 and 1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOS) == 0, tok.token_to_id(EOS)
    assert tok.token_to_id(PAD) == 1, tok.token_to_id(PAD)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,  # byte-level BPE never produces unknowns; GPT-2 uses the same convention
        pad_token=PAD,
        model_max_length=max_len,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # decode(encode(x)) == x, also for " ." and " ,"
    )
    fast.save_pretrained(out_dir)
    _portable_tokenizer_class(out_dir)
    return fast


def _portable_tokenizer_class(model_dir: Path) -> None:
    """Name the class ``PreTrainedTokenizerFast`` in tokenizer_config.json.

    transformers 5 writes its new name ``TokenizersBackend``, which transformers 4 cannot
    resolve; both versions resolve the old name to their tokenizers-backed class.
    """
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Model training
# ----------------------------------------------------------------------------------------------


def encode_documents(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each text followed by EOS; documents longer than ``max_len`` are dropped."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = [[*x, eos] for x in ids if len(x) + 1 <= max_len]
    if len(out) < len(texts):
        print(f"dropped {len(texts) - len(out)} documents longer than {max_len} tokens")
    return out


def task_shares(tokenizer: Any, docs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Fraction of training documents and of tokens (EOS included) that each task holds."""
    lengths = [
        len(x) + 1 for x in tokenizer([t for _, t in docs], add_special_tokens=False)["input_ids"]
    ]
    n_tokens = sum(lengths)
    out = {}
    for name in TASK_NAMES:
        mine = [n for (task, _), n in zip(docs, lengths, strict=True) if task == name]
        out[name] = {"documents": len(mine) / len(docs), "tokens": sum(mine) / n_tokens}
    return out


def length_grouped_batches(
    docs: list[list[int]], batch_size: int, rng: random.Random, group: int = 64
) -> list[list[int]]:
    """Indices of ``docs`` in batches of similar length, in a shuffled order.

    Shuffle, cut into groups of ``group`` batches, sort each group by length, split it into
    batches, shuffle the batches: padding waste drops while every epoch still differs.
    """
    order = list(range(len(docs)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: len(docs[i]))
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(docs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad documents into ``input_ids`` and ``labels`` (-100 on padding), both (B, L)."""
    length = max(len(d) for d in docs)
    input_ids = torch.full((len(docs), length), pad_id, dtype=torch.long)  # (B, L)
    labels = torch.full((len(docs), length), -100, dtype=torch.long)  # (B, L)
    for i, d in enumerate(docs):
        input_ids[i, : len(d)] = torch.tensor(d)
        labels[i, : len(d)] = torch.tensor(d)
    return input_ids, labels


@torch.no_grad()
def evaluate(
    model: Any, docs: list[list[int]], pad_id: int, batch_size: int = 64
) -> tuple[float, int]:
    """Summed next-token NLL over ``docs`` and the number of predicted tokens."""
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    for start in range(0, len(order), batch_size):
        input_ids, labels = collate([docs[i] for i in order[start : start + batch_size]], pad_id)
        logits = model(input_ids=input_ids).logits[:, :-1]  # (B, L-1, V)
        target = labels[:, 1:]  # (B, L-1)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total += float(nll)
        count += int((target != -100).sum())
    model.train()
    return total, count


def make_model(cfg: BuildConfig, vocab_size: int) -> Any:
    """A fresh GPT-2 LM sized by ``cfg`` with eos/bos = 0 and pad = 1."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        # Without dropout: the corpus is large relative to the model and CPU time is the limit.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def train_model(
    cfg: BuildConfig,
    model: Any,
    train_docs: list[list[int]],
    val_docs: dict[str, list[list[int]]],
    pad_id: int,
) -> dict[str, Any]:
    """Train ``model`` in place for ``cfg.steps`` updates; return the training log."""
    from transformers import get_cosine_schedule_with_warmup

    rng = random.Random(f"batches-{cfg.seed}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # biases, LayerNorm
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.steps)
    history: list[dict[str, float]] = []
    batches: list[list[int]] = []
    ema, tokens, epoch = None, 0, 0
    all_val = [d for docs in val_docs.values() for d in docs]
    stride = max(1, len(all_val) // cfg.eval_docs)
    probe = all_val[::stride][: cfg.eval_docs]  # spread over all tasks: the list is task-ordered
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc="train", mininterval=10.0)
    for step in bar:
        if not batches:
            batches = length_grouped_batches(train_docs, cfg.batch_size, rng)
            epoch += 1
        input_ids, labels = collate([train_docs[i] for i in batches.pop()], pad_id)
        # No attention_mask: padding is on the right only, so causal attention already keeps real
        # tokens from seeing it, and positions 0..n-1 are the default ones.
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((labels != -100).sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", epoch=epoch, refresh=False)  # mininterval throttles
        if step % cfg.eval_every == 0 or step == cfg.steps:
            nll, n = evaluate(model, all_val if step == cfg.steps else probe, pad_id)
            entry = {
                "step": step,
                "train_loss": ema,
                "val_loss": nll / n,
                "val_ppl": math.exp(nll / n),
                "minutes": (time.perf_counter() - start) / 60,
            }
            history.append(entry)
            tqdm.write(json.dumps(entry))
    wall = time.perf_counter() - start
    per_task = {}
    for name, docs in val_docs.items():
        nll, n = evaluate(model, docs, pad_id)
        per_task[name] = {"val_loss": nll / n, "val_ppl": math.exp(nll / n), "tokens": n}
    return {
        "wall_time_s": wall,
        "epochs": epoch,
        "train_tokens": tokens,
        "history": history,
        "final": history[-1],
        "per_task": per_task,
    }


def show_samples(
    model: Any, tokenizer: Any, data_dir: Path, seed: int, n: int = 3, max_new_tokens: int = 80
) -> dict[str, Any]:
    """Greedy and sampled completions of ``n`` test prompts per task, printed and returned."""
    model.eval()
    out: dict[str, Any] = {}
    for name in TASK_NAMES:
        rows = [r for r in load_jsonl(name, data_dir) if r["split"] == "test"][:n]
        out[name] = []
        for row in rows:
            ids = tokenizer(row["prompt"], return_tensors="pt", add_special_tokens=False)
            torch.manual_seed(seed)
            greedy = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)
            sampled = model.generate(
                **ids,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
            )
            p = ids["input_ids"].shape[1]
            item = {
                "prompt": row["prompt"],
                "greedy": tokenizer.decode(greedy[0, p:], skip_special_tokens=True),
                "sampled": tokenizer.decode(sampled[0, p:], skip_special_tokens=True),
                "reference": row["references"][0],
            }
            out[name].append(item)
            print(f"[{name}] {item['prompt']!r}")
            print(f"  greedy : {item['greedy']!r}\n  sampled: {item['sampled']!r}")
    return out


def build(cfg: BuildConfig, out: Path, data_only: bool = False) -> None:
    """Write data, then tokenizer and model, under ``out/data`` and ``out/model``."""
    t0 = time.perf_counter()
    counts = write_task_data(out / "data", cfg.seed)
    print(f"task data written to {out / 'data'}: {counts} ({time.perf_counter() - t0:.1f}s)")
    if data_only:
        return

    import transformers
    from transformers import GenerationConfig

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    docs = corpus.lm_documents(cfg.seed, cfg.n_reviews, cfg.n_concepts, cfg.n_reverse)
    val = validation_documents(cfg.seed)
    print(f"corpus: {len(docs)} train documents, {len(val)} validation documents")

    tokenizer = train_tokenizer([t for _, t in docs], cfg.vocab_size, cfg.n_positions, model_dir)
    train_ids = encode_documents(tokenizer, [t for _, t in docs], cfg.n_positions)
    val_ids: dict[str, list[list[int]]] = {}
    for name in TASK_NAMES:
        val_ids[name] = encode_documents(
            tokenizer, [t for n, t in val if n == name], cfg.n_positions
        )
    shares = task_shares(tokenizer, docs)
    print(f"task shares (documents, tokens): {shares}")
    lengths = sorted(len(d) for d in train_ids)
    print(
        f"tokenizer: {len(tokenizer)} tokens; document length median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}, total {sum(lengths)} tokens"
    )

    model = make_model(cfg, len(tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    log = train_model(cfg, model, train_ids, val_ids, tokenizer.pad_token_id)

    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _portable_tokenizer_class(model_dir)
    samples = show_samples(model, tokenizer, out / "data", cfg.seed)
    log.update(
        {
            "config": asdict(cfg),
            "parameters": n_params,
            "vocab_size": len(tokenizer),
            "train_documents": len(train_ids),
            "task_shares": shares,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "build_time_s": time.perf_counter() - t0,
            "samples": samples,
        }
    )
    (model_dir / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    final = log["final"]
    print(
        f"done in {log['build_time_s'] / 60:.1f} min: val loss {final['val_loss']:.3f}, "
        f"val ppl {final['val_ppl']:.2f}; per task "
        + ", ".join(f"{k} {v['val_ppl']:.2f}" for k, v in log["per_task"].items())
    )


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (``python -m textgym.assets.build``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny corpus and few steps (smoke test)"
    )
    parser.add_argument("--data-only", action="store_true", help="write the task data and stop")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder that receives data/ and model/ (default: the package's assets; "
        "with --quick a temporary folder, so a smoke test never replaces them)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override the number of updates")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    cfg = BuildConfig.quick() if args.quick else BuildConfig()
    overrides = {
        k: v for k, v in (("steps", args.steps), ("threads", args.threads)) if v is not None
    }
    cfg = BuildConfig(**{**asdict(cfg), **overrides})
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="textgym-assets-")) if args.quick else ASSETS_DIR
    build(cfg, out, data_only=args.data_only)


if __name__ == "__main__":
    main()
