# Stands in for PyInstaller's own run-time hook of `multiprocessing` (see skip_inspect_patch.py).
# That hook imports multiprocessing and multiprocessing.spawn at start-up so that frozen
# programs can spawn worker processes; the agent never uses multiprocessing (the standard
# library merely brings it into the bundle).
