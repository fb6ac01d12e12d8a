"""The study: YAML config, grid, Ray Tune runner, Parquet results. The one package importing ray."""
