"""textgym.agents: RL, preference and imitation agents over textgym environments."""

from textgym.agents.bc import BC, BCConfig, Demonstrations
from textgym.agents.dagger import DAgger, DAggerConfig, LMExpert
from textgym.agents.distill import Distill, DistillConfig
from textgym.agents.dpo import DPO, DPOConfig
from textgym.agents.gail import GAIL, GAILConfig
from textgym.agents.grpo import GRPO, GRPOConfig
from textgym.agents.irl import IRL, IRLConfig
from textgym.agents.iterative_dpo import IterativeDPO, IterativeDPOConfig
from textgym.agents.kto import KTO, KTOConfig
from textgym.agents.listwise_dpo import ListwiseDPO, ListwiseDPOConfig
from textgym.agents.ppo import PPO, PPOConfig
from textgym.agents.reinforce import REINFORCE, REINFORCEConfig
from textgym.agents.reward_modeling import RewardModelConfig, RewardModelTrainer

__all__ = [
    "BC",
    "DPO",
    "GAIL",
    "GRPO",
    "IRL",
    "KTO",
    "PPO",
    "REINFORCE",
    "BCConfig",
    "DAgger",
    "DAggerConfig",
    "DPOConfig",
    "Demonstrations",
    "Distill",
    "DistillConfig",
    "GAILConfig",
    "GRPOConfig",
    "IRLConfig",
    "IterativeDPO",
    "IterativeDPOConfig",
    "KTOConfig",
    "LMExpert",
    "ListwiseDPO",
    "ListwiseDPOConfig",
    "PPOConfig",
    "REINFORCEConfig",
    "RewardModelConfig",
    "RewardModelTrainer",
]
