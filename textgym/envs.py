"""Token-level text-generation environments (stub: replaced by the environments work)."""


class TextGenEnv:  # placeholder until envs.py lands
    pass


class TextGenVectorEnv:  # placeholder until envs.py lands
    pass
