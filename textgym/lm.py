"""LanguageModel (stub: replaced by the foundation work)."""


class LanguageModel:  # placeholder until lm.py lands
    pass
