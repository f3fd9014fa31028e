"""Positron image features that fill the attention memory (paper §3.3): PCA (eq. 4-5) and
PCANet (Chan et al. 2015) reduced by PCA."""
