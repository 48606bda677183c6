"""Developer scripts: setup and the checks CI runs (scripts/check.sh)."""
