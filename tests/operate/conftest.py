"""Operating a node: the CLI, backups, migrations, the master key, metrics, the image, packaging, docs.

These run on the embedded backend only (they work on a data folder's files, build images, run
tools); a module that also belongs in the PostgreSQL + S3 + Redis pass is marked `scale_out`.
"""

SCALE_OUT = False
