"""Reports: JSON, a Markdown table and PNG plots of what each step bought."""
from slimkit.report.report import RATIO_KEYS, Report, environment, ratios

__all__ = ["Report", "ratios", "environment", "RATIO_KEYS"]
