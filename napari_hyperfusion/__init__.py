"""napari-hyperfusion: look inside image + EHR fusion models (HyperFusion, and
MedFusionNet for multilabel risk with clinical notes) in napari.

Research and teaching tool, not a diagnostic device. The package root stays
light (no torch, no Qt) so that napari can discover the plugin cheaply; the
core lives in plain modules: :mod:`~napari_hyperfusion.hyper`,
:mod:`~napari_hyperfusion.networks`, :mod:`~napari_hyperfusion.schema`,
:mod:`~napari_hyperfusion.medfusion`, :mod:`~napari_hyperfusion.risk_features`,
:mod:`~napari_hyperfusion.model_file`, :mod:`~napari_hyperfusion.device`.
"""

__version__ = "0.1.0"
