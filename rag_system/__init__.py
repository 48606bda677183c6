"""The retrieval engine: hybrid candidates (vectors + full-text), fusion, scoring, MMR.

Candidates come from a per-user in-process index kept current from Postgres (local_*.py) or,
for large users and cold starts, from one SQL statement (candidates.py, sql_search.py); both
feed the same scoring (scoring.py, on the columns of batch.py) and MMR.
"""
