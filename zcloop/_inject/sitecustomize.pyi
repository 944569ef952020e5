# Run by Python's `site` at interpreter start (see sitecustomize.py); nothing to import.
LOOP_ENV: str
