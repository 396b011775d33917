"""netinvert: run trained neural networks in reverse."""
