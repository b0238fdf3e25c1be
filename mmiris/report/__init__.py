"""The HTML report: metrics tables, training curves and explanation cards."""
