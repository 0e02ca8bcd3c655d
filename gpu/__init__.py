"""CuPy raw-kernel backend (installed as :mod:`ttrlearn.gpu`)."""
