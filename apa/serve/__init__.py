"""One recording in, scores and phones out: the predictor and its Gradio page."""
