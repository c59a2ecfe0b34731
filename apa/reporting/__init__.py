"""Results out of run folders: comparison and Table 3 tables, plots, the model card, report.html."""
