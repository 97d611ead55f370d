"""Pass plans: each batch once clean and once per condition, feeding many analyses."""
