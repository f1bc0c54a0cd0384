"""Scaling out: PostgreSQL storage, several workers, two nodes, engine errors and outages.

Most modules here start the engines or the cluster they test themselves, so they run once,
in the first pass; a module built for the PostgreSQL + S3 + Redis pass is marked `scale_out`.
"""

SCALE_OUT = False
