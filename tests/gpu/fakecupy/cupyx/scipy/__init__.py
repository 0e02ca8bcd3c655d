"""Fake ``cupyx.scipy`` (see ``tests/gpu/fakecupy/cupy/__init__.py``)."""
