"""Perplexity (stub: replaced by the foundation work)."""


def perplexity(*args: object, **kwargs: object) -> float:
    raise NotImplementedError
