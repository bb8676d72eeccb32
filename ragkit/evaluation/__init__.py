"""Measuring instruments: the chunking evaluation (Chroma's metrics) and its report."""
