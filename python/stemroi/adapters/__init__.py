"""Integrations with other packages. Each module imports its package lazily
(only when used), so stemroi itself never requires hyperspy, py4DSTEM or dask."""
