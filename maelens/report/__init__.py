"""Figures and the self-contained HTML report, drawn from results files only."""
