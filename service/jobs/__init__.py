"""Jobs: rasters too big for one request, segmented in the background of ``fcn serve``.

* :mod:`service.jobs.store` keeps each job in its own folder (``JOBS_DIR/.jobs/ID/``: the
  request, a status file replaced atomically, the outputs and the raster pipeline's resume
  sidecar) and checks that a requested path stays inside the jobs folder;
* :mod:`service.jobs.runner` runs them one at a time on a worker thread with the pipeline of
  ``fcn predict`` on GeoTIFFs (:func:`service.geo.run.segment_raster`, then
  :func:`service.geo.vectors.write_mask_vectors`), and after a restart resumes or reports
  the jobs it finds.

Neither imports FastAPI; the HTTP routes are :mod:`service.http.routes.jobs`.
"""
