"""Operator work on a data folder: backup, restore, verify, master-key rotation.

A library layer the admin CLI is a thin shell over. Each function takes the settings
(`Config`: which database, blob folder and master key) and a `Progress` for long loops,
and never needs a running server: `backup` and `verify` run beside one, `restore` and
`rotate_master_key` refuse to (the data folder's lock, `lock.data_folder_lock`).
"""
