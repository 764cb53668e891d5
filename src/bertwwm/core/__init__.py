"""Foundations every stage uses: `UserError` (one line, exit 2), atomic writes, run-folder locks, safe reads of
model files. Nothing here imports another stage."""
