"""Interpretability: attributions, map similarity, faithfulness, dark knowledge, interpretable students, figures."""
