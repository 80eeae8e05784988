"""Output formats: the table that names them (:mod:`~service.formats.registry`) and the
encoders it points at.

Raster outputs (:mod:`~service.formats.raster`, PNG writing in :mod:`~service.formats.png`),
the pixel report (:mod:`~service.formats.report`) and the vector outputs
(:mod:`~service.formats.shapes`: COCO RLE from :mod:`~service.formats.coco_rle`, polygons
traced by :mod:`~service.formats.polygons` and simplified by :mod:`~service.formats.simplify`).
"""
