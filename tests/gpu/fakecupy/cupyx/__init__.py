"""Fake ``cupyx`` (see ``tests/gpu/fakecupy/cupy/__init__.py``)."""
