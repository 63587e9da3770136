"""Quality evaluation: testbed metrics, per-step joint KL, summary tables and plots."""

from adjust.eval.joint_kl import per_step_joint_kl
from adjust.eval.run import EvalConfig, evaluate, format_table, gap_closed, summarize

__all__ = ["EvalConfig", "evaluate", "format_table", "gap_closed", "per_step_joint_kl", "summarize"]
