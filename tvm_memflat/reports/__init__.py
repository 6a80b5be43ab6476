"""Reports: text summaries, JSON and matplotlib plots."""
