"""napari-hyperfusion: look inside image + EHR fusion models (HyperFusion, and
MedFusionNet for multilabel risk with clinical notes) in napari.

Research and teaching tool, not a diagnostic device. The package root stays
light (no torch, no Qt) so that napari can discover the plugin cheaply. The
subpackages are the layers, each importing only those below it::

    _qt, cli, launch, samples      the panel, the commands, napari's samples
    analysis, train                explanations, what-if; training, evaluation
    infer                          one subject, a cohort
    io                             NIfTI, model files, atomic writes
    data                           schema, records, preprocessing, notes
    nn                             hyper layers, networks, devices
    errors, resources              the error base class; shipped files

``synth`` (the synthetic cohort generator) is used by the CLI, the scripts
and the tests only; the panel reads its ground truth (``synth.truth``) for
synthetic subjects and nothing else. ``tests/test_architecture.py``
enforces the direction.
"""

__version__ = "0.1.0"
