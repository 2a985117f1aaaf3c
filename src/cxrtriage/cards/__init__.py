"""Documents: model cards, HTML reports, tables and figures, rendered from results."""
