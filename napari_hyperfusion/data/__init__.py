"""From a record and a scan to the numbers a network reads.

``schema`` (the EHR fields, their encoding and imputation), ``records``
(CSV/TSV records in ADNIMERGE or BIDS layout), ``preprocess`` (a scan onto
the model grid in MNI space), ``template`` (the shipped MNI152 template),
``dataset`` (a checked cohort table), ``model_inputs`` (record + note ->
network input), ``notes`` (the offline clinical-note encoder, optional
extra ``[notes]``), ``risk_features`` (stage-1 field selection), ``labels``
(the risk task's labels). Depends only on :mod:`napari_hyperfusion.nn`.
"""
