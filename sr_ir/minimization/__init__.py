"""Exact structural minimization through the IR: channel analysis driven by the rules in rules/,
constant folding, certified rewrites only, numeric verification of the result."""
from .api import Minimized, minimize, minimize_program
from .report import MinimizeReport
from ..rewrite.rulebook import RuleBook, UncertifiedRuleError

__all__ = ["Minimized", "MinimizeReport", "RuleBook", "UncertifiedRuleError", "minimize", "minimize_program"]
