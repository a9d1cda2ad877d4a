"""textgym.agents: RL, preference and imitation agents over textgym environments."""
