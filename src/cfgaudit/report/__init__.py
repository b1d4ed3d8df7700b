"""Reports: pandas frames of findings and listings, and their renderers."""
