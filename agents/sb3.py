"""A transformer actor-critic for stable-baselines3's own, unmodified ``PPO``.

SB3 is met through its extension point, an ``ActorCriticPolicy``: textgym adds no algorithm here.
π(·|s) is the LM head's softmax at the last valid position of the observation (the right-padded
prompt + completion so far); V(s) is a linear head (``textgym.training.ValueHead``) on the same
trunk's hidden state at that position::

    model = stable_baselines3.PPO(TransformerPolicy, gym.make("TextGen-v0", ...),
                                  policy_kwargs={"model": textgym.DEFAULT_MODEL})
    model.learn(total_timesteps=...)

Cost next to the native agents: SB3 keeps no KV cache, so every step re-encodes the whole prefix
(O(L) tokens per step instead of 1, O(T·L) per episode), and its rollout buffer stores the full
observation. On the embedded model this is several times slower per token than
``textgym.agents.PPO``, which also adds the KL penalty to π_ref (SB3's PPO has none). Use this
policy to compare against SB3 or to reuse its tooling; use ``textgym.agents.PPO`` to train.

Notes:
- ``model`` is a path / hub name (recommended: SB3 pickles ``policy_kwargs`` into its zip, and a
  path stays small) or a ``textgym.LanguageModel``.
- Dropout stays off in SB3's training mode too, so that the recomputed log-probs of the first PPO
  epoch equal those it collected with (ρ = 1).
- SB3 stores observations as float32; token ids are exact up to 2^24, checked at construction.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor

from textgym.hf import hidden_size
from textgym.lm import LanguageModel
from textgym.training import ValueHead


class TransformerPolicy(ActorCriticPolicy):
    """Actor = the LM head at the last valid observation position; critic = a value head.

    Args:
        observation_space: the env's ``Dict(input_ids, attention_mask)``.
        action_space: ``Discrete(V)`` with V the model's logits size.
        lr_schedule: given by SB3.
        model: a path / hub name, or a ``textgym.LanguageModel``.
        **kwargs: passed to ``ActorCriticPolicy`` (``optimizer_class``, ``optimizer_kwargs``...).
    """

    def __init__(
        self,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        lr_schedule: Any,
        model: LanguageModel | str | os.PathLike[str],
        **kwargs: Any,
    ) -> None:
        lm = (
            model
            if isinstance(model, LanguageModel)
            else LanguageModel.from_pretrained(model, device="cpu")
        )
        if not isinstance(action_space, spaces.Discrete) or int(action_space.n) != lm.vocab_size:
            raise ValueError(
                f"TransformerPolicy needs action_space Discrete({lm.vocab_size}) (the model's "
                f"logits), got {action_space}"
            )
        if lm.vocab_size > 2**24:
            raise ValueError(f"vocab of {lm.vocab_size} ids is not exact in SB3's float32 buffers")
        self._lm_arg = model if not isinstance(model, LanguageModel) else None
        self._init_lm = lm  # read by _build, which ActorCriticPolicy.__init__ calls
        kwargs.setdefault("ortho_init", False)  # never re-initialise a pretrained model
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        lm = self._init_lm
        self.lm_model = lm.model.eval()
        self.value_net = ValueHead(hidden_size(lm.model.config))  # type: ignore[assignment]  # SB3 types it Linear
        self.action_dist = CategoricalDistribution(lm.vocab_size)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]  # typed as the base class
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["model"] = self._lm_arg if self._lm_arg is not None else self._init_lm
        return data

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.lm_model.eval()  # no dropout: the first epoch must see ρ = 1

    def _heads(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(B, V)`` and values ``(B, 1)`` at each row's last valid position."""
        mask = obs["attention_mask"].long()  # (B, L), right-padded
        lengths = mask.sum(-1)  # (B,)
        width = int(lengths.max())  # drop the all-padding tail: it is never attended to
        ids, mask = obs["input_ids"][:, :width].long(), mask[:, :width]  # (B, L')
        trunk = self.lm_model.base_model(input_ids=ids, attention_mask=mask)
        rows = torch.arange(ids.shape[0], device=ids.device)
        hidden = trunk.last_hidden_state[rows, lengths - 1]  # (B, H)
        logits = self.lm_model.get_output_embeddings()(hidden).float()  # (B, V)
        return logits, self.value_net(hidden[:, None])  # (B, V), (B, 1)

    def forward(self, obs: Any, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        logits, values = self._heads(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: Any, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        logits, values = self._heads(obs)
        dist = self.action_dist.proba_distribution(action_logits=logits)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: Any) -> Distribution:
        return self.action_dist.proba_distribution(action_logits=self._heads(obs)[0])

    def predict_values(self, obs: Any) -> Tensor:
        return self._heads(obs)[1]
