"""Files in and out: NIfTI volumes in world space (``nifti``), model files
as safetensors + JSON metadata (``model_file``), and atomic writes
(``atomic``). Never unpickles a file a user hands us."""
