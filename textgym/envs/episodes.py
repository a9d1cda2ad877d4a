"""The episode kernel: B episodes as numpy arrays (B, L), no per-env Python objects.

Both envs delegate reset and step here; the single env is this state with B = 1, so the two
cannot drift apart. This is the hot path: a step is a few numpy operations on (B, L) arrays,
text is decoded only when episodes end, and the reward is called once for all that end in a step.
With a responder (multi-turn, ``docs/multiturn.md``) the turn ends of a step go through
:class:`~textgym.envs.turns._Turns`; without one the kernel runs exactly its single-turn code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from textgym.envs.turns import _Turns

if TYPE_CHECKING:
    from textgym.envs.config import EnvConfig


@dataclass
class _StepOut:
    rewards: np.ndarray  # (B,) float32
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    paid: np.ndarray  # (E,) rows whose sequence reward was paid this step
    components: dict[str, np.ndarray] | None  # name -> (E,) unweighted component scores
    ended: np.ndarray  # (D,) rows whose episode ended this step


class _Episodes:
    """B episodes as numpy arrays; both envs delegate reset/step here."""

    def __init__(self, cfg: EnvConfig, num_envs: int) -> None:
        B, L = num_envs, cfg.seq_len
        self.cfg = cfg
        self.num_envs = B
        self.rows = np.arange(B)
        self.input_ids = np.full((B, L), cfg.pad_token_id, dtype=np.int64)  # (B, L)
        self.attention_mask = np.zeros((B, L), dtype=np.int64)  # (B, L)
        self.prompt_length = np.zeros(B, dtype=np.int64)  # (B,)
        self.t = np.zeros(B, dtype=np.int64)  # (B,) steps taken (the clock of the horizon)
        # Completion tokens written; equals t except in a fixed-horizon absorbing state, where
        # time goes on and nothing is written.
        self.n = np.zeros(B, dtype=np.int64)  # (B,)
        self.prompt_index = np.zeros(B, dtype=np.int64)  # (B,)
        self.absorbed = np.zeros(B, dtype=bool)  # (B,) fixed horizon: text ended before T
        self.trim = np.zeros(B, dtype=np.int64)  # (B,) EOS / stop tokens to drop from the text
        self.text = np.full(B, None, dtype=object)  # (B,) text decoded when its reward was paid
        # Multi-turn state, only with a responder: the single-turn path never touches it.
        self.turns = _Turns(self) if cfg.multi_turn else None

    def reset(self, rows: np.ndarray, prompt_index: np.ndarray) -> None:
        """Start new episodes in ``rows`` (index array) on prompts ``prompt_index``."""
        cfg, P = self.cfg, self.cfg.max_prompt_tokens
        self.input_ids[rows, :P] = cfg.prompt_ids[prompt_index]
        self.input_ids[rows, P:] = cfg.pad_token_id
        self.attention_mask[rows, :P] = cfg.prompt_mask[prompt_index]
        self.attention_mask[rows, P:] = 0
        self.prompt_length[rows] = cfg.prompt_lengths[prompt_index]
        self.prompt_index[rows] = prompt_index
        self.t[rows] = 0
        self.n[rows] = 0
        self.absorbed[rows] = False
        self.text[rows] = None
        if self.turns is not None:
            self.turns.reset(rows)

    def lengths(self) -> np.ndarray:  # (B,)
        """Valid tokens of each row (prompt + completion)."""
        return self.prompt_length + self.n

    def _stop_hits(self, live: np.ndarray, hit: np.ndarray, trim: np.ndarray) -> None:
        """Mark live rows whose completion (multi-turn: current policy turn) now ends with a stop
        sequence (in place)."""
        pos_end = self.prompt_length[live] + self.n[live]  # (n,) one past the newest token
        written = self.n[live] if self.turns is None else self.turns.written(live)  # (n,)
        for s in self.cfg.stop_ids:
            k = len(s)
            cand = np.flatnonzero(~hit & (written >= k))
            if cand.size == 0:
                continue
            cols = pos_end[cand, None] - k + np.arange(k)[None, :]  # (c, k)
            match = (self.input_ids[live[cand][:, None], cols] == s).all(axis=1)  # (c,)
            hit[cand[match]] = True
            trim[cand[match]] = k

    def step(self, actions: np.ndarray, active: np.ndarray | None) -> _StepOut:
        """Append ``actions`` (B,) to the rows in ``active`` (bool (B,), None = all)."""
        cfg = self.cfg
        B = self.num_envs
        act = self.rows if active is None else np.flatnonzero(active)
        # Absorbed rows (fixed horizon, after EOS) ignore their action and only count time.
        live = act[~self.absorbed[act]] if cfg.fixed_horizon else act
        a = actions[live]
        pos = self.prompt_length[live] + self.n[live]  # (n,) where each action is written
        rewards = np.zeros(B, dtype=np.float32)
        if cfg.token_level and live.size:
            # The token reward sees the state before the action (rewards/base.py contract).
            rewards[live] = cfg.reward.step(self.input_ids[live], pos, a)
        # What the step overwrites, put back if scoring raises: a failed step leaves the
        # episodes as they were, so the caller can retry it or reset.
        undo = (self.input_ids[live, pos], self.trim[live], self.absorbed[live])
        if self.turns is not None:
            self.turns.mark_starts(live, pos)
        self.input_ids[live, pos] = a
        self.attention_mask[live, pos] = 1
        self.n[live] += 1
        self.t[act] += 1
        try:
            if self.turns is not None:
                return self._finish_turn_step(act, live, a, rewards, self.turns)
            return self._finish_step(act, live, a, rewards)
        except BaseException:
            self.input_ids[live, pos], self.trim[live], self.absorbed[live] = undo
            self.attention_mask[live, pos] = 0
            if self.turns is not None:
                self.turns.turn_start[live, pos] = False
            self.n[live] -= 1
            self.t[act] -= 1
            raise

    def _finish_step(
        self, act: np.ndarray, live: np.ndarray, a: np.ndarray, rewards: np.ndarray
    ) -> _StepOut:
        """Termination, truncation and the sequence reward of a step whose tokens are written."""
        cfg = self.cfg
        B = self.num_envs
        hit = a == cfg.eos_token_id  # (n,) the text ended with this action
        trim = hit.astype(np.int64)
        if cfg.stop_ids:
            self._stop_hits(live, hit, trim)
        self.trim[live] = trim
        done_text = live[hit]
        at_horizon = act[self.t[act] >= cfg.max_new_tokens]

        terminated = np.zeros(B, dtype=bool)
        truncated = np.zeros(B, dtype=bool)
        pay = np.zeros(B, dtype=bool)
        pay[done_text] = True
        if cfg.fixed_horizon:
            self.absorbed[done_text] = True
            terminated[at_horizon] = self.absorbed[at_horizon]
            truncated[at_horizon] = ~self.absorbed[at_horizon]
            ended = at_horizon
        else:
            terminated[done_text] = True
            truncated[at_horizon] = True
            truncated &= ~terminated  # EOS on the last allowed step is a termination
            ended = np.flatnonzero(terminated | truncated)
        pay |= truncated
        paid = np.flatnonzero(pay)

        components = self._pay(paid, rewards)
        return _StepOut(rewards, terminated, truncated, paid, components, ended)

    def _pay(self, rows: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray] | None:
        """Decode the finished ``rows``, add their sequence reward to ``rewards`` (not for
        token-level rewards, already paid per step) and keep their texts; the reward's
        components (None when there are none or no row finished)."""
        cfg = self.cfg
        if not rows.size:
            return None
        components = None
        texts = self.decode(rows)
        if not cfg.token_level:
            prompts = [cfg.task.prompts[i] for i in self.prompt_index[rows]]
            refs = cfg.task.references
            batch_refs = None if refs is None else [refs[i] for i in self.prompt_index[rows]]
            scores, components = cfg.scorer(prompts, texts, batch_refs)
            rewards[rows] += scores
        self.text[rows] = texts  # after the reward: nothing to undo when it raises
        return components

    def _finish_turn_step(
        self, act: np.ndarray, live: np.ndarray, a: np.ndarray, rewards: np.ndarray, turns: _Turns
    ) -> _StepOut:
        """:meth:`_finish_step` of a multi-turn episode: a turn end asks the responder, which
        replies (environment tokens are appended) or ends the episode; the token budget counts
        every token after the prompt, the policy's and the environment's."""
        cfg = self.cfg
        B = self.num_envs
        hit = a == cfg.eos_token_id  # (n,) the policy's turn ended with this action
        trim = hit.astype(np.int64)
        if cfg.stop_ids:
            self._stop_hits(live, hit, trim)
        self.trim[live] = trim
        out = turns.respond(live[hit])  # may raise: nothing has changed yet
        terminated = np.zeros(B, dtype=bool)
        truncated = np.zeros(B, dtype=bool)
        terminated[out.rows[out.terminated]] = True
        truncated[out.rows[out.truncated]] = True
        for r, reply in zip(out.rows, out.replies, strict=True):
            rewards[r] += reply.reward  # the per-turn reward, on the action that ended the turn
        turn_ended = np.zeros(B, dtype=bool)
        turn_ended[out.rows] = True
        horizon = act[(self.n[act] >= cfg.max_new_tokens) & ~turn_ended[act]]  # cut mid-turn
        truncated[horizon] = True
        ended = np.flatnonzero(terminated | truncated)
        components = self._pay(ended, rewards)
        turns.apply(out, horizon, ended)  # after the reward: nothing to undo when it raises
        return _StepOut(rewards, terminated, truncated, ended, components, ended)

    def decode(self, rows: np.ndarray, skip_special_tokens: bool = True) -> list[str]:
        """Completions of ``rows`` without their final EOS / stop sequence (one batched decode)."""
        start = self.prompt_length[rows]
        stop = start + self.n[rows] - self.trim[rows]
        seqs = [self.input_ids[r, s:e].tolist() for r, s, e in zip(rows, start, stop, strict=True)]
        return list(self.cfg.tokenizer.batch_decode(seqs, skip_special_tokens=skip_special_tokens))

    def action_mask(self) -> np.ndarray:  # (B, V) bool
        """The provider's mask for the current states, shape-checked."""
        provider = self.cfg.action_mask
        assert provider is not None
        m = np.asarray(provider(self.input_ids, self.lengths()))
        expected = (self.num_envs, self.cfg.vocab_size)
        if m.shape != expected:
            raise ValueError(f"action mask provider returned shape {m.shape}, expected {expected}")
        return m.astype(bool, copy=False)

    def expert_actions(self) -> np.ndarray:  # (B,) int64
        """The task expert's next token for every row (EOS in absorbed rows)."""
        expert = self.cfg.expert
        if expert is None:
            raise RuntimeError(
                f"task {self.cfg.task.name!r} has no expert; give it one, e.g. "
                "dataclasses.replace(task, expert=textgym.tasks.ReferenceExpert())"
            )
        if self.turns is not None and hasattr(expert, "label_turns"):
            return self.turns.label(expert)  # a TurnExpert plans from the transcript
        out = np.asarray(
            expert(self.prompt_index, self.input_ids, self.prompt_length, self.n), dtype=np.int64
        )
        out[self.absorbed] = self.cfg.eos_token_id
        return out

    def render(self, row: int) -> str:
        """Prompt and completion so far of ``row``, special tokens shown."""
        tok = self.cfg.tokenizer
        p, t = int(self.prompt_length[row]), int(self.t[row])
        prompt = tok.decode(self.input_ids[row, :p].tolist())
        completion = tok.decode(self.input_ids[row, p : p + self.n[row]].tolist())
        return f"[{t}/{self.cfg.max_new_tokens}] {prompt}|{completion}"
