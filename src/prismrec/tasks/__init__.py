"""Tasks beside user-item recommendation (each a sub-package with its own data type, models and metrics)."""
