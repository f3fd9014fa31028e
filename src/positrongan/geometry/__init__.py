"""Geometry of the scene: the scanner ring and the tube phantom."""
