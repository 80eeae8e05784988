"""``fcn predict``: a folder of images segmented to files.

:mod:`~service.batch.scan` lists the inputs, :mod:`~service.batch.runner` segments them on a
thread pool (the same :mod:`service.pipeline` as HTTP) or :mod:`~service.batch.ray` as a Ray
Data job, :mod:`~service.batch.writer` writes each output atomically and
:mod:`~service.batch.summary` writes the per-image CSV/JSON summary.
"""
