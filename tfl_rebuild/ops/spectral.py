"""Audio and spectral ops: RFFT2D, COMPLEX_ABS, REAL, IMAG and the feature-extractor ops around them."""

from __future__ import annotations
