"""The study: YAML config, grid, Ray Tune runner, Parquet results. The only package importing ray."""
