"""Verifiable rewards, from ``textgym.verifiable`` (the core, where the tasks live): ``math``
(exact final answers, optional partial credit), ``format`` (the requested layout) and ``regex``
(a full match of a pattern). See that module for the checkers and their rules."""

from __future__ import annotations

from textgym.verifiable import FormatReward, MathReward, RegexReward

__all__ = ["FormatReward", "MathReward", "RegexReward"]
