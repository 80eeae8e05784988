"""The HTTP service (FastAPI): ``create_app(settings)`` and the ``fcn serve`` runner.

Layout: app.py assembles; settings.py (``FCN_*``), admission.py (concurrency + queue -> 503),
errors.py (typed error -> status + JSON), metrics.py (Prometheus), registry.py (loaded models),
upload.py (capped body reading), server.py (uvicorn with drain on SIGTERM), routes/, web/.
"""
