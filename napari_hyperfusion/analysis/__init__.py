"""Looking inside a prediction: Captum attributions (``explain``), what-if
exploration from cached image features (``whatif``) and attribution maps
as world-placed overlays (``overlays``). UI-free: progress and cancel
arrive as callbacks."""
