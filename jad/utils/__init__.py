"""Small shared pieces below every other package: user errors, atomic writes, progress bars.

Standard library only (tqdm for the progress bars), so ``jad.metrics``, ``jad.data``,
``jad.models``, ``jad.methods`` and ``jad.train_lib`` can all use them without import cycles.
"""
