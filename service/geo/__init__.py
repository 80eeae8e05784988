"""Geospatial rasters and vectors: GeoTIFF/COG in and out, GIS-ready vectors."""
