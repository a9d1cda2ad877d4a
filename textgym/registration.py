"""Gymnasium ids of textgym (filled in by the environments work)."""
