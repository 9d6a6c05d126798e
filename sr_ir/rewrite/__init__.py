"""The generic rewrite engine: rules compiled from their own text, matched against a program's nodes
(multi-node patterns included), gated by certificates (RuleBook) and applied as written
(substitution). Minimization (channel facts, planning) and the frontend's raising both run on it."""
from .rulebook import RuleBook, UncertifiedRuleError

__all__ = ["RuleBook", "UncertifiedRuleError"]
