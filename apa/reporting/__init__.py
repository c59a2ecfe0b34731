"""Results out of run folders (read through apa.run_folder): every results table is one `table.Table` (epochs,
comparison, Table 3, the model card's, report.html's), the curves are computed once (`curves`), report.html adds the
utterance browser (`browser`)."""
