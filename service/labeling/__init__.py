"""Pre-annotation for labelling tools: Label Studio's brush RLE and results, image fetching.

Torch-free and FastAPI-free like the engine: the HTTP router (service/http/routes/label_studio.py)
and ``fcn data import-label-studio`` (training/commands/data.py) both use these modules.
"""
