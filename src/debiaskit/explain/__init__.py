"""Ways to see which shortcut a model took (learning curves now; bias visualisations next)."""
