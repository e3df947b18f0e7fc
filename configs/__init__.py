"""jad's shipped configs, one file per method x dataset; installed as ``jad.configs``.

Run one by path (``--config=configs/pbas_mvtec.py``) or by name (``--config=pbas_mvtec``).
"""
