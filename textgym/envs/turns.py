"""Multi-turn state of the episode kernel, and the chat-template formatting of turns.

:class:`_Turns` holds what a multi-turn episode adds to the kernel's arrays (see
``docs/multiturn.md``): which positions are environment tokens, where each turn starts, how many
policy turns ended, where the current policy turn began, and the turns as text (the
:class:`~textgym.multiturn.Transcript` a responder sees). The kernel calls it only when a
responder is set, so a single-turn episode runs exactly the code it ran before.

A step that ends policy turns first asks every responder (nothing changes yet), then decides each
row's fate (reply appended, ``terminated``, or ``truncated`` by the turn limit or by a reply that
does not fit the token budget), then the kernel scores the episodes that ended, and only then are
the replies written: a responder or a reward that raises leaves the episodes as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from textgym.multiturn import Reply, Transcript, as_reply

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from textgym.envs.episodes import _Episodes

__all__ = ["ChatFormat"]

_USER, _ASSISTANT = "textgym user sentinel", "textgym assistant sentinel"


class ChatFormat:
    """The tokenizer's chat template applied to turns: the prompt is the user's first message
    (with the generation prompt), each environment turn a user message; the policy's turns are
    the assistant's, written by the policy itself up to its end-of-turn token.

    An environment turn's text is what the template writes after an assistant message's content
    and end-of-turn token (the tokenizer's EOS text, when the template writes it right after the
    content) up to the next generation prompt; so a policy turn that ends with EOS followed by the
    environment's tokens is the template's rendering of the conversation, character for character.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template=True needs a tokenizer with a chat template; set one "
                "(tokenizer.chat_template = '...') and pass tokenizer=tokenizer, or pass "
                "chat_template=False"
            )
        self.tokenizer = tokenizer
        before = self._render([("user", _USER), ("assistant", _ASSISTANT)], False)
        if _ASSISTANT not in before:
            raise ValueError("the chat template drops the assistant's message content")
        cut = before.rindex(_ASSISTANT) + len(_ASSISTANT)
        eos = tokenizer.eos_token
        if eos and before.startswith(eos, cut):
            cut += len(eos)
        self._before = before[:cut]

    def _render(self, messages: list[tuple[str, str]], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
        return str(text)

    def prompt(self, text: str) -> str:
        """The prompt as the user's first message, then the assistant's generation prompt."""
        return self._render([("user", text)], True)

    def reply(self, text: str) -> str:
        """An environment turn as a user message after the assistant's, then the generation
        prompt."""
        after = self._render([("user", _USER), ("assistant", _ASSISTANT), ("user", text)], True)
        if not after.startswith(self._before):
            raise ValueError(
                "the chat template renders a conversation differently once it grows (the "
                "rendering of [user, assistant] is not a prefix of [user, assistant, user]); "
                "such templates cannot be fed token by token: pass chat_template=False"
            )
        return after[len(self._before) :]


@dataclass
class _Outcome:
    """What the responders said to the rows whose policy turn ended in a step (aligned rows)."""

    rows: np.ndarray  # (E,) rows whose turn ended
    texts: list[str]  # the policy turns, decoded
    replies: list[Reply]
    reply_ids: list[list[int]]  # tokenised (formatted) replies; [] where the reply is None
    terminated: np.ndarray  # (E,) bool: the responder ended the episode
    truncated: np.ndarray  # (E,) bool: the turn limit or the token budget ended it
    reasons: list[str | None] = field(default_factory=list)


class _Turns:
    """The multi-turn state of B episodes (numpy arrays and one list of turn texts per row)."""

    def __init__(self, ep: _Episodes) -> None:
        cfg = ep.cfg
        B, L = ep.num_envs, cfg.seq_len
        assert cfg.responder is not None  # the kernel builds this only for multi-turn envs
        self.ep = ep
        self.responder = cfg.responder
        self.env_mask = np.zeros((B, L), dtype=bool)  # (B, L) environment tokens
        self.turn_start = np.zeros((B, L), dtype=bool)  # (B, L) first token of each turn
        self.turn = np.zeros(B, dtype=np.int64)  # (B,) policy turns ended
        self.begin = np.zeros(B, dtype=np.int64)  # (B,) completion index of the turn's start
        self.appended = np.zeros(B, dtype=np.int64)  # (B,) environment tokens of the last step
        self.truncated_by = np.full(B, None, dtype=object)  # (B,) why an episode was truncated
        self.texts: list[list[str]] = [[] for _ in range(B)]  # the finished turns of each row
        self.final = np.full(B, None, dtype=object)  # (B,) Transcript of ended episodes

    def reset(self, rows: np.ndarray) -> None:
        self.env_mask[rows] = False
        self.turn_start[rows] = False
        self.turn[rows] = 0
        self.begin[rows] = 0
        self.appended[rows] = 0
        self.truncated_by[rows] = None
        self.final[rows] = None
        for r in rows:
            self.texts[r] = []

    def written(self, rows: np.ndarray) -> np.ndarray:  # (n,)
        """Tokens of the current policy turn (stop sequences never span turns)."""
        return self.ep.n[rows] - self.begin[rows]

    def transcript(self, row: int | np.integer, turns: list[str]) -> Transcript:
        ep, task = self.ep, self.ep.cfg.task
        i = int(ep.prompt_index[row])
        refs = None if task.references is None else task.references[i]
        return Transcript(task.prompts[i], tuple(turns), i, refs)

    def _decode_turns(self, rows: np.ndarray, trim: np.ndarray) -> list[str]:
        """The current policy turn of each row, without ``trim`` end-marker tokens."""
        ep = self.ep
        start = ep.prompt_length[rows] + self.begin[rows]
        stop = ep.prompt_length[rows] + ep.n[rows] - trim
        seqs = [ep.input_ids[r, s:e].tolist() for r, s, e in zip(rows, start, stop, strict=True)]
        return list(ep.cfg.tokenizer.batch_decode(seqs, skip_special_tokens=True))

    def respond(self, rows: np.ndarray) -> _Outcome:
        """Ask the responder about the rows whose turn just ended; change nothing."""
        ep, cfg = self.ep, self.ep.cfg
        texts = self._decode_turns(rows, ep.trim[rows])
        replies = [
            as_reply(self.responder(self.transcript(r, [*self.texts[r], t])), self.responder)
            for r, t in zip(rows, texts, strict=True)
        ]
        E = len(rows)
        terminated = np.array([rep.text is None for rep in replies], dtype=bool)  # (E,)
        truncated = np.zeros(E, dtype=bool)
        reasons: list[str | None] = [None] * E
        speaking = [j for j in range(E) if not terminated[j]]
        reply_ids: list[list[int]] = [[] for _ in range(E)]
        if speaking:
            chat = cfg.chat
            strs = [str(replies[j].text) for j in speaking]
            if chat is not None:
                strs = [chat.reply(s) for s in strs]
            encoded = cfg.tokenizer(strs, add_special_tokens=False)["input_ids"]
            for j, ids in zip(speaking, encoded, strict=True):
                reply_ids[j] = list(ids)
        for j in speaking:
            r = rows[j]
            if cfg.max_turns is not None and self.turn[r] + 1 >= cfg.max_turns:
                truncated[j], reasons[j] = True, "max_turns"
            elif ep.n[r] + len(reply_ids[j]) >= cfg.max_new_tokens:
                # The reply must fit with room for one policy token after it: never a silent cut.
                truncated[j], reasons[j] = True, "context"
        return _Outcome(rows, texts, replies, reply_ids, terminated, truncated, reasons)

    def apply(self, out: _Outcome, horizon: np.ndarray, ended: np.ndarray) -> None:
        """Write the step's outcome: replies of the rows that go on, the transcripts and
        truncation reasons of the rows that ended (``horizon``: cut mid-turn at the token
        budget; ``ended``: every row whose episode ended this step)."""
        ep = self.ep
        self.appended[:] = 0
        for j, r in enumerate(out.rows):
            self.texts[r].append(out.texts[j])
            self.turn[r] += 1
            if out.terminated[j] or out.truncated[j]:
                self.truncated_by[r] = out.reasons[j]
                continue
            ids = out.reply_ids[j]
            k, p, n = len(ids), int(ep.prompt_length[r]), int(ep.n[r])
            ep.input_ids[r, p + n : p + n + k] = ids
            ep.attention_mask[r, p + n : p + n + k] = 1
            self.env_mask[r, p + n : p + n + k] = True
            if k:
                self.turn_start[r, p + n] = True
            self.texts[r].append(str(out.replies[j].text))
            ep.n[r] += k
            self.begin[r] = ep.n[r]
            self.appended[r] = k
        if horizon.size:
            # Cut mid-turn at the token budget: the partial turn closes the transcript.
            for r, t in zip(horizon, self._decode_turns(horizon, ep.trim[horizon]), strict=True):
                self.texts[r].append(t)
                self.truncated_by[r] = "max_new_tokens"
        for r in ended:
            self.final[r] = self.transcript(r, self.texts[r])

    def mark_starts(self, rows: np.ndarray, pos: np.ndarray) -> None:
        """Mark the positions ``pos`` just written where a policy turn starts."""
        self.turn_start[rows, pos] = self.ep.n[rows] == self.begin[rows]

    def label(self, expert: Any) -> np.ndarray:  # (B,) int64
        """A :class:`~textgym.multiturn.TurnExpert`'s labels of every row's current state."""
        ep = self.ep
        rows = np.arange(ep.num_envs)
        # The expert plans from the finished turns; the tokens of the current one index the plan.
        transcripts = [self.transcript(r, self.texts[r]) for r in rows]
        return np.asarray(expert.label_turns(transcripts, self.written(rows)), dtype=np.int64)
