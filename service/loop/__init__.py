"""The labelling loop: Label Studio annotations -> fine-tune -> held-out gate -> new version.

``store`` keeps every version of a model with its lineage; ``tasks`` reads annotated tasks and
keeps the held-out share; ``label_studio_api`` fetches a project's export; ``pipeline`` runs
training, export and the gate in subprocesses (this package imports no torch); ``runner``
decides when to train (debounce, one run at a time) and promotes.
"""
