"""Reads a study's Parquet results and writes figures, tables and a report. No ray, no torch."""
