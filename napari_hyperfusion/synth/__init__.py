"""The SYNTHETIC cohort generator: ADNI-like records (``records``), clinical
notes (``notes``), deformation-based scans on the shipped template
(``images``) and the cohort writer (``cohort``). Used by the CLI
(``hyperfusion make-cohort``), the scripts and the tests only: nothing that
reads real data depends on it."""
