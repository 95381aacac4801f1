"""Running a model: one subject from the panel (``subject``) and a whole
cohort table from the command line (``cohort``)."""
